"""Publishing: validate, store, then broadcast through the channel layer on commit.

The app is imported before models are ready, so the store is imported inside functions.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING, Any

import redis.exceptions
from asgiref.sync import async_to_sync
from channels.db import database_sync_to_async
from channels.layers import get_channel_layer
from django.db import transaction

from events import sse
from events.conf import conf
from events.messages import EVENT_MESSAGE, EventMessage, group_name
from events.names import validate_channel, validate_event_type

if TYPE_CHECKING:
    from events.models import Event

logger = logging.getLogger(__name__)

DEFAULT_EVENT_TYPE = "message"
# The longest a broadcast may take before it is given up (and logged).
BROADCAST_TIMEOUT_SECONDS = 5.0
# After a failed broadcast, publishers of this process skip the layer for this long
# rather than each waiting up to BROADCAST_TIMEOUT_SECONDS on a Redis that is down (an
# admin action over 100 rows would otherwise hang for minutes). Skipping loses nothing:
# the event is stored; every hub compares its position with the store after each
# liveness ping (events/hub.py, at most PING_INTERVAL_SECONDS apart) and delivers what
# was never broadcast, and streams that lost the layer resume from the store.
BREAKER_SECONDS = 2.0
# What a channel layer that cannot reach Redis raises.
LAYER_DOWN = (TimeoutError, OSError, redis.exceptions.ConnectionError, redis.exceptions.TimeoutError)
_skip_until = 0.0
# The open events.testing.capture_events() lists: each gets every event sent meanwhile.
captures: list[list[Event]] = []


def encode_payload(data: Any) -> str:
    """The payload as compact JSON, or ValueError naming what is wrong with it."""
    try:
        encoded = sse.dumps(data)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"event data is not JSON-serialisable: {exc}") from exc
    except RecursionError as exc:
        raise ValueError("event data is nested too deeply to serialise") from exc
    size = len(encoded.encode())
    limit = conf.max_payload_bytes
    if size > limit:
        raise ValueError(f"event data is {size} bytes as JSON, over the limit of {limit} bytes")
    return encoded


def encode_text(text: Any) -> str:
    """A raw event's data: the string as given, line breaks normalised to LF (each line
    goes out as its own `data:` field either way), or ValueError."""
    if not isinstance(text, str):
        raise ValueError(f"raw event data must be a string, not {type(text).__name__}")
    if "\x00" in text:
        # Browsers keep NUL in data, but no database text column stores it reliably.
        raise ValueError("raw event data contains a NUL character")
    normalised = sse.normalise_line_breaks(text)
    try:
        size = len(normalised.encode())
    except UnicodeEncodeError as exc:
        raise ValueError("raw event data is not valid Unicode (it has a lone surrogate)") from exc
    limit = conf.max_payload_bytes
    if size > limit:
        raise ValueError(f"event data is {size} bytes, over the limit of {limit} bytes")
    return normalised


def message_for(event: Event) -> EventMessage:
    return {
        "type": EVENT_MESSAGE,
        "channel": event.channel,
        "seq": event.seq,
        "event": event.type,
        "data": event.data,
    }


def send_event(channel: str, data: Any, event: str = DEFAULT_EVENT_TYPE, *, raw: bool = False) -> Event:
    """Store an event and broadcast it to every subscriber of `channel`.

    `data` is sent as compact JSON; with `raw=True` it must be a string, sent as is (an
    HTML fragment for htmx or Turbo). Inside `transaction.atomic()` the broadcast waits
    for the commit and never happens on rollback. Raises ValueError for a bad channel,
    type or payload (nothing stored).
    """
    validate_channel(channel)
    validate_event_type(event)
    return send_encoded(channel, encode_text(data) if raw else encode_payload(data), event, raw=raw)


def send_encoded(channel: str, encoded: str, event: str = DEFAULT_EVENT_TYPE, *, raw: bool = False) -> Event:
    """send_event for data already encoded as it goes on the wire, such as a stored
    event sent again: it is not parsed, so whatever was stored can be sent as it is (a
    payload nested too deeply to decode and encode again included)."""
    validate_channel(channel)
    validate_event_type(event)
    size, limit = len(encoded.encode()), conf.max_payload_bytes
    if size > limit:
        raise ValueError(f"event data is {size} bytes, over the limit of {limit} bytes")

    from events import store

    stored = store.append(channel, event, encoded, raw=raw)
    for outbox in captures:  # events.testing.capture_events(); empty outside tests
        outbox.append(stored)
    transaction.on_commit(lambda: _after_commit(stored))
    return stored


async def asend_event(
    channel: str, data: Any, event: str = DEFAULT_EVENT_TYPE, *, raw: bool = False
) -> Event:
    """The async twin of send_event."""
    # database_sync_to_async: closes the worker thread's stale connections, as a request would.
    return await database_sync_to_async(send_event)(channel, data, event, raw=raw)


def _after_commit(event: Event) -> None:
    broadcast(event)
    _maybe_trim(event)


def broadcast(event: Event) -> bool:
    """Send a stored event to the channel layer. Failures are logged, never raised:
    the event is stored, and clients get it on their next resume."""
    layer = get_channel_layer()
    if layer is None:
        logger.error("no channel layer configured; event %s stored but not broadcast", event.sse_id)
        return False
    global _skip_until
    if time.monotonic() < _skip_until:
        logger.warning(
            "broadcast of event %s skipped: the channel layer failed moments ago; "
            "it is stored and subscribers will get it from the store",
            event.sse_id,
        )
        return False
    try:
        async_to_sync(_group_send)(layer, group_name(event.channel), message_for(event))
    except Exception as exc:
        if isinstance(exc, LAYER_DOWN):
            # Only a layer that cannot be reached opens the breaker; a bug elsewhere
            # must not make every publisher of the process skip broadcasts.
            _skip_until = time.monotonic() + BREAKER_SECONDS
        # One line: a publisher in a shell while Redis is down should not see a page of
        # traceback for an event that is safe. The traceback is there at DEBUG.
        logger.error(
            "broadcast of event %s failed (%s); it is stored and will be replayed",
            event.sse_id,
            _describe(exc),
        )
        logger.debug("broadcast of event %s failed", event.sse_id, exc_info=True)
        return False
    return True


def _describe(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError):
        return f"no answer within {BROADCAST_TIMEOUT_SECONDS:g} s"
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


async def _group_send(layer: Any, group: str, message: dict[str, Any]) -> None:
    # Bounded: an unreachable Redis host must not hang the view or admin action that
    # published (the event is stored; subscribers get it from the store).
    await asyncio.wait_for(layer.group_send(group, message), BROADCAST_TIMEOUT_SECONDS)


def _maybe_trim(event: Event) -> None:
    keep = conf.history_per_channel
    # Trim in batches (every tenth of the history) rather than on every publish.
    if event.seq <= keep or event.seq % max(1, keep // 10):
        return
    from events import store

    try:
        store.trim(event.channel, keep)
    except Exception:
        logger.exception("trimming channel %r failed", event.channel)
