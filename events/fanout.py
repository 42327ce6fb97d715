"""One channel's local streams: each event encoded once, the same bytes to every stream.

Intentional divergence from the textbook Channels consumer (every stream joins the group
and formats its own frame): the hub joins each group once per process, and the frame
is built here once per event, whatever the number of streams.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from typing import Protocol

from events import metrics, sse
from events.messages import EventMessage
from events.sequencer import Sequencer, StoreReader

logger = logging.getLogger(__name__)


class Stream(Protocol):
    """What the hub needs of a local stream (the SSE consumer)."""

    channels: tuple[str, ...]
    last_write: float

    async def deliver_batch(
        self, channel: str, batch: Sequence[tuple[str, int, bytes, bytes]], chunk: bytes
    ) -> None:
        """Events of `channel` in order, each as (channel, seq, frame, body); `chunk`
        is their frames joined (one write for the stream)."""
        ...

    async def heartbeat(self) -> None: ...

    async def close_stream(self, *, reason: metrics.CloseReason) -> None: ...


class LocalChannel:
    """A channel with local streams: its subscribers, and the sequencer feeding them
    (this is the sequencer's outlet)."""

    __slots__ = ("name", "sequencer", "subscribers")

    def __init__(self, name: str, store: StoreReader) -> None:
        self.name = name
        self.subscribers: set[Stream] = set()
        self.sequencer = Sequencer(name, store, self)

    async def fan_out(self, events: Sequence[EventMessage]) -> None:
        # Read once, before the first await (the sequencer's position covers `events`
        # for a stream added meanwhile).
        streams = list(self.subscribers)
        name = self.name
        batch = []
        for message in events:
            seq = message["seq"]
            body = sse.event_body(message["data"], message["event"])
            batch.append((name, seq, sse.id_line(f"{name}:{seq}") + body, body))
        # Joined once: every single-channel stream writes this same bytes object.
        chunk = batch[0][2] if len(batch) == 1 else b"".join(item[2] for item in batch)
        for stream in streams:
            try:
                await stream.deliver_batch(name, batch, chunk)
            except Exception:
                # Its position has moved past events it may not have: end it, and the
                # client resumes from what it has.
                logger.exception("writing to a stream failed; ending it")
                await close_all([stream], "error")
        # Once per event, not per stream: the fan-out stays free of metric calls.
        for message in events:
            metrics.delivered(len(streams), message.get("committed_at"))

    async def end_streams(self, reason: metrics.CloseReason) -> None:
        await close_all(list(self.subscribers), reason)

    def gap_filled(self, events: int) -> None:
        metrics.gap_filled(events)


async def close_all(streams: Iterable[Stream], reason: metrics.CloseReason) -> None:
    """End each stream (its client reconnects and resumes); one failing spoils none."""
    for stream in streams:
        try:
            await stream.close_stream(reason=reason)
        except Exception:
            logger.exception("ending a stream failed")
