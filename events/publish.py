"""Publishing: validate, store, then broadcast through the channel layer on commit.

Sync publishers store in their own thread and transaction; once committed, the events
go to the process's publisher thread (events/broadcaster.py), which sends them to Redis
on a connection it keeps. Events stored inside one transaction.atomic() block (a loop of
send_event calls, send_events, an admin action over many rows) go out together in one
Redis round trip at commit. Async publishers hand their events to a store thread of the
process that commits what several coroutines sent meanwhile in one transaction
(events/group_commit.py).

The app is imported before models are ready, so the store is imported inside functions.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any

from django.db import transaction

from events import broadcaster, metrics, sse
from events.conf import conf
from events.messages import EVENT_MESSAGE, EventMessage
from events.names import validate_channel, validate_event_type
from events.signals import event_stored

if TYPE_CHECKING:
    from events.models import Event

logger = logging.getLogger(__name__)

DEFAULT_EVENT_TYPE = "message"
EVENT_FIELDS = frozenset({"channel", "event", "data", "text"})
# (channel, type, data as stored, raw): an event checked and ready to store.
Prepared = tuple[str, str, str, bool]


def within_limit(data: str, unit: str = "bytes", limit: int | None = None) -> str:
    """`data` if its UTF-8 form fits `limit` (default EVENTS_MAX_PAYLOAD_BYTES), else
    ValueError."""
    if limit is None:
        limit = conf.max_payload_bytes
    size = len(data.encode())
    if size > limit:
        raise ValueError(f"event data is {size} {unit}, over the limit of {limit} bytes")
    return data


def encode_payload(data: Any, limit: int | None = None) -> str:
    """The payload as compact JSON, or ValueError naming what is wrong with it."""
    try:
        encoded = sse.dumps(data)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"event data is not JSON-serialisable: {exc}") from exc
    except RecursionError as exc:
        raise ValueError("event data is nested too deeply to serialise") from exc
    return within_limit(encoded, "bytes as JSON", limit)


def encode_text(text: Any, limit: int | None = None) -> str:
    """A raw event's data: the string as given, line breaks normalised to LF (each line
    goes out as its own `data:` field either way), or ValueError."""
    if not isinstance(text, str):
        raise ValueError(f"raw event data must be a string, not {type(text).__name__}")
    if "\x00" in text:
        # Browsers keep NUL in data, but no database text column stores it reliably.
        raise ValueError("raw event data contains a NUL character")
    try:
        return within_limit(sse.normalise_line_breaks(text), limit=limit)
    except UnicodeEncodeError as exc:
        raise ValueError("raw event data is not valid Unicode (it has a lone surrogate)") from exc


def message_for(event: Event) -> EventMessage:
    return {
        "type": EVENT_MESSAGE,
        "channel": event.channel,
        "seq": event.seq,
        "event": event.type,
        "data": event.data,
        "committed_at": time.time(),
    }


def prepare(
    channel: str, data: Any, event: str = DEFAULT_EVENT_TYPE, raw: bool = False, limit: int | None = None
) -> Prepared:
    """Check an event before anything is stored: ValueError naming what is wrong.
    `limit`: EVENTS_MAX_PAYLOAD_BYTES, when the caller has read it for many events."""
    validate_channel(channel)
    validate_event_type(event)
    return channel, event, encode_text(data, limit) if raw else encode_payload(data, limit), raw


def prepare_item(item: object, limit: int | None = None) -> Prepared:
    """One element of a bulk send: {"channel": ..., "data": ..., "event": ...} (event
    optional), or "text" instead of "data" for a raw event (a string sent as is)."""
    if not isinstance(item, Mapping):
        kind = type(item).__name__
        raise ValueError(f'an event must be an object {{"channel": ..., "data": ...}}, not {kind}')
    if "channel" not in item:
        raise ValueError('no "channel" field')
    fields = [key for key in ("data", "text") if key in item]
    if not fields:
        raise ValueError('no "data" field (or "text" for text)')
    if len(fields) > 1:
        raise ValueError('both "data" and "text": send one of them')
    extra = set(item) - EVENT_FIELDS
    if extra:
        raise ValueError(f"unknown field(s): {', '.join(sorted(map(str, extra)))}")
    raw = fields == ["text"]
    if raw and not isinstance(item["text"], str):
        raise ValueError('"text" must be a string (send JSON values as "data")')
    return prepare(item["channel"], item[fields[0]], item.get("event", DEFAULT_EVENT_TYPE), raw, limit)


def prepare_items(items: Iterable[Mapping[str, Any]]) -> list[Prepared]:
    """Every element checked (all or nothing): the ValueError names the first bad one."""
    prepared = []
    # Read once: a setting Django does not define costs a failed lookup on every read.
    limit = conf.max_payload_bytes
    for index, item in enumerate(items):
        try:
            prepared.append(prepare_item(item, limit))
        except ValueError as exc:
            raise ValueError(f"event {index}: {exc}") from exc
    return prepared


def send_event(channel: str, data: Any, event: str = DEFAULT_EVENT_TYPE, *, raw: bool = False) -> Event:
    """Store an event and broadcast it to every subscriber of `channel`.

    `data` is sent as compact JSON; with `raw=True` it must be a string, sent as is (an
    HTML fragment for htmx or Turbo). Inside `transaction.atomic()` the broadcast waits
    for the commit and never happens on rollback. Raises ValueError for a bad channel,
    type or payload (nothing stored). The broadcast runs on the process's publisher
    thread: this returns once the event is stored (and committed, outside a
    transaction), without waiting on Redis.
    """
    (stored,) = send_prepared([prepare(channel, data, event, raw)])
    return stored


def prepare_encoded(
    channel: str, encoded: str, event: str = DEFAULT_EVENT_TYPE, *, raw: bool = False
) -> Prepared:
    """prepare() for data already encoded as it goes on the wire, such as a stored event
    sent again: JSON is not parsed, so whatever was stored can be sent as it is (a
    payload nested too deeply to decode and encode again included); text gets the
    checks of any raw event."""
    if raw:
        return prepare(channel, encoded, event, raw=True)
    validate_channel(channel)
    validate_event_type(event)
    return channel, event, within_limit(encoded), False


def send_encoded(channel: str, encoded: str, event: str = DEFAULT_EVENT_TYPE, *, raw: bool = False) -> Event:
    """send_event for data already encoded (see prepare_encoded)."""
    (stored,) = send_prepared([prepare_encoded(channel, encoded, event, raw=raw)])
    return stored


def send_events(items: Iterable[Mapping[str, Any]]) -> list[Event]:
    """Store several events in one transaction and broadcast them in one Redis round trip.

    Each item is {"channel": ..., "data": ..., "event": ...} ("event" optional; "text"
    instead of "data" for a raw event); seqs are handed out per channel in the order
    given. Every item is checked before anything is stored: one bad item raises
    ValueError naming it, and nothing is sent.
    """
    return send_prepared(prepare_items(items))


def send_prepared(prepared: list[Prepared]) -> list[Event]:
    """send_events for items already checked by prepare(): store them (one statement for
    one event, one transaction for several), announce them (the event_stored signal),
    and broadcast them once committed."""
    if not prepared:
        return []
    from events import store
    from events.models import Event

    if len(prepared) == 1:
        events, trimmed = [store.append_one(prepared[0])], False
    else:
        # In a transaction of its own, a list trims its channels in that transaction
        # (one commit, not two); in the caller's, at its commit as any event does.
        trimmed = not transaction.get_connection().in_atomic_block
        events = store.append_many(prepared, keep=conf.history_per_channel if trimmed else None)
    metrics.published(len(events))
    after_commit(events, trim=not trimmed)
    # Once per stored batch, not per event: send_events of a hundred items is one send.
    # After after_commit: a receiver that raises cannot keep stored events from going out.
    event_stored.send(sender=Event, events=events)
    return events


async def asend_event(
    channel: str, data: Any, event: str = DEFAULT_EVENT_TYPE, *, raw: bool = False
) -> Event:
    """The async twin of send_event. The database work runs on a store thread (the
    event loop never waits on a query); events that several coroutines send at the same
    moment are committed together."""
    from events import group_commit

    (stored,) = await group_commit.submit([prepare(channel, data, event, raw)])
    return stored


async def asend_events(items: Iterable[Mapping[str, Any]]) -> list[Event]:
    """The async twin of send_events."""
    prepared = prepare_items(items)
    if not prepared:
        return []
    from events import group_commit

    return await group_commit.submit(prepared)


# -- after the commit ----------------------------------------------------------------


def after_commit(events: list[Event], trim: bool = True) -> None:
    """Broadcast and trim once the events are committed: now, outside a transaction;
    at commit inside one (never on rollback), all of one transaction's events together."""
    connection = transaction.get_connection()
    if not connection.in_atomic_block:
        _committed(events, trim)
        return
    batch = getattr(connection, _BATCH_ATTR, None)
    if batch is None or batch.ran or not connection.run_on_commit:
        # A new transaction: the last one's hooks have run, or no hook is pending.
        batch = _CommitBatch()
        setattr(connection, _BATCH_ATTR, batch)
    # One hook per call, so that Django drops the hooks of a rolled-back savepoint
    # (and with them its events); the batch sends what the surviving hooks gathered.
    connection.on_commit(batch.hook(events))


_BATCH_ATTR = "_events_commit_batch"


class _CommitBatch:
    """The events of one transaction, gathered by their on_commit hooks as they run and
    sent together by the last one registered.

    Why a timer as well: when the last hook registered was rolled back with a savepoint,
    Django drops it, and nothing tells the surviving hooks which of them runs last (the
    hooks still to run are in a list local to Django's commit; no hook runs after them).
    So the first surviving hook that is not the last arms a timer on the publisher
    thread, which sends what was gathered a moment later; a hook that gathers after that
    send arms it again (other hooks of the transaction may be slow)."""

    LEFTOVER_SECONDS = 0.05

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._registered = 0
        self._gathered: list[Event] = []
        self._leftover_timer = False
        self.ran = False

    def hook(self, events: list[Event]) -> Callable[[], None]:
        self._registered += 1
        number = self._registered

        def on_commit() -> None:
            with self._lock:
                self.ran = True
                self._gathered.extend(events)
                last = number == self._registered
                arm = not last and not self._leftover_timer
                self._leftover_timer = self._leftover_timer or arm
            if last:
                self.send(trim=True)
            elif arm:
                # No trimming from the publisher thread: it would open a database
                # connection there; the channel's next publish trims.
                broadcaster.publisher.call_later(self.LEFTOVER_SECONDS, self.send, False)

        return on_commit

    def send(self, trim: bool) -> None:
        with self._lock:
            events, self._gathered = self._gathered, []
            self._leftover_timer = False
        _committed(events, trim=trim)


def _committed(events: list[Event], trim: bool = True) -> None:
    if not events:
        return
    broadcaster.submit([message_for(event) for event in events])
    if trim:
        _maybe_trim(events)


def _maybe_trim(events: list[Event]) -> None:
    from events import store

    keep = conf.history_per_channel
    for channel, last in sorted(store.due_trims(events, keep).items()):
        try:
            store.trim(channel, keep, last)
        except Exception:
            logger.exception("trimming channel %r failed", channel)
