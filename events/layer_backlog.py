"""The messages already queued for the hub's layer channel, taken without waiting.

channels-redis' pub/sub layer (the one events/layers.py configures) keeps, per event
loop, a layer object whose `channels[name]` is an asyncio.Queue of the raw bytes read
from Redis; its `receive()` takes one of them and deserializes it. Once a receive has
returned, the hub takes what else is already in that queue, in the same order, so that
a burst or a backlog is fanned out in one pass (events/hub.py). This reads the layer's
private structure (tests/test_coalescing.py pins it): under any other layer nothing
more is taken here, and the hub handles one message a pass.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from events.log import log_failure

logger = logging.getLogger(__name__)

Message = dict[str, Any]


def _raw_queue(layer: Any, channel_name: str) -> tuple[asyncio.Queue[Any], Callable[[Any], Message]] | None:
    get_layer = getattr(layer, "_get_layer", None)
    deserialize = getattr(layer, "deserialize", None)
    if get_layer is None or deserialize is None:
        return None
    queues = getattr(get_layer(), "channels", None)
    queue = queues.get(channel_name) if isinstance(queues, dict) else None
    if not isinstance(queue, asyncio.Queue):
        return None
    return queue, deserialize


def take_queued(layer: Any, channel_name: str, max_messages: int, max_bytes: int) -> list[Message]:
    """Up to `max_messages` messages already queued for `channel_name` (and no more once
    `max_bytes` of them are taken), oldest first; none under a layer not known here.
    A message that cannot be read is logged and skipped, as the layer's receive() would
    have raised for it alone."""
    found = _raw_queue(layer, channel_name)
    if found is None:
        return []
    queue, deserialize = found
    taken: list[Message] = []
    size = 0
    while len(taken) < max_messages and size < max_bytes and not queue.empty():
        raw = queue.get_nowait()
        size += len(raw) if isinstance(raw, bytes | bytearray) else 0
        try:
            taken.append(deserialize(raw))
        except Exception as exc:
            log_failure(logger, exc, "a message on %s could not be read; skipped", channel_name)
    return taken
