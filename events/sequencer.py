"""One channel's events in order, once each: the rules between the layer and the streams.

Plain asyncio: the store and the streams are handed in (a `StoreReader`, an `Outlet`),
so tests/test_sequencer.py checks every rule with fakes, without Redis or a database.

The rules, per channel:
- `seq` increases by one per event, with no holes below the newest (events/store.py).
  The position is the last seq handed to the outlet; a message at or below it is a
  duplicate and is dropped.
- A message past the next seq reveals a gap (a message the layer lost: pub/sub across a
  Redis reconnect, a publisher whose broadcast failed): the skipped seqs are read from
  the store and handed on first.
- Messages that arrive before the position is known (between joining the group and
  reading the channel's last seq) are held, and taken in turn once it is.
- A store page that is empty or starts late means the history was trimmed before this
  process could deliver it: the channel's streams are ended (history_trimmed; each
  client resumes and is told by a stream-reset) and the position moves past the hole.
- Reconciliation: a lost message that no later one reveals is found by comparing the
  position with the store's last seq, and filled the same way.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Protocol

from events.messages import EVENT_MESSAGE, EventMessage

if TYPE_CHECKING:
    from datetime import datetime

    from events.metrics import CloseReason

logger = logging.getLogger(__name__)

# Gap fills read the store this many events at a time.
FILL_PAGE = 200


class StoredEvent(Protocol):
    @property
    def seq(self) -> int: ...

    @property
    def type(self) -> str: ...

    @property
    def data(self) -> str: ...

    @property
    def created(self) -> datetime: ...


class StoreReader(Protocol):
    """The store as the sequencers read it."""

    async def page(self, channel: str, after: int, upto: int, limit: int) -> Sequence[StoredEvent]:
        """At most `limit` events with after < seq <= upto, oldest first."""
        ...

    async def last_seqs(self, channels: list[str]) -> Mapping[str, int]:
        """The last committed seq of each channel (0 for one never published to)."""
        ...


class Outlet(Protocol):
    """Where a sequencer hands its channel's events (the hub's local streams)."""

    async def fan_out(self, events: Sequence[EventMessage]) -> None:
        """Hand `events` (in order, the last one at the sequencer's position) to every
        stream. Reads its streams once, before its first await: a stream added later has
        its position read from the sequencer, which already covers these events."""
        ...

    async def end_streams(self, reason: CloseReason) -> None: ...

    def gap_filled(self, events: int) -> None: ...


class Sequencer:
    def __init__(self, channel: str, store: StoreReader, outlet: Outlet) -> None:
        self.channel = channel
        self.position = 0
        # Set once the position is known (start) or can never be (fail).
        self.ready = asyncio.Event()
        self.error: BaseException | None = None
        # Left by the hub: a reconciliation under way no longer fills it.
        self.stopped = False
        self._store = store
        self._outlet = outlet
        self._early: list[EventMessage] = []
        # Held while events are handed on, so that a gap fill, a live message and a
        # reconciliation of the same channel never interleave.
        self._lock = asyncio.Lock()

    async def start(self, position: int) -> None:
        """The channel's last seq, read after joining its group: take the held messages."""
        async with self._lock:
            self.position = position
            self.ready.set()
            early, self._early = self._early, []
            await self._accept_all(early)

    def fail(self, error: BaseException) -> None:
        """The join failed: no position will come."""
        self.error = error
        self._early = []
        self.ready.set()

    def stop(self) -> None:
        self.stopped = True

    async def receive(self, message: EventMessage) -> None:
        """A message from the layer."""
        await self.receive_many((message,))

    async def receive_many(self, messages: Sequence[EventMessage]) -> None:
        """Messages from the layer, in arrival order: the rules applied to each, and
        what follows the position handed on together (one fan-out where no gap
        interrupts). A failing gap fill does not stop the later messages (each tries
        the fill again, as it would alone); the first failure is raised at the end."""
        if not self.ready.is_set():
            self._early.extend(messages)
            return
        async with self._lock:
            await self._accept_all(messages)

    async def _accept_all(self, messages: Iterable[EventMessage]) -> None:
        run: list[EventMessage] = []
        failure: Exception | None = None
        for message in messages:
            seq = message["seq"]
            if seq <= self.position:
                continue  # already handed on (from the store or an earlier message)
            if seq > self.position + 1:
                if run:
                    await self._outlet.fan_out(run)
                    run = []
                try:
                    await self._fill(seq - 1, "did not arrive from the layer")
                except Exception as exc:
                    failure = failure or exc
                    continue
            self.position = seq
            run.append(message)
        if run:
            await self._outlet.fan_out(run)
        if failure is not None:
            raise failure

    async def catch_up(self, latest: int) -> None:
        """Fill up to `latest`, the store's last seq (reconciliation)."""
        if self.stopped or latest <= self.position:
            return
        async with self._lock:
            if not self.stopped and latest > self.position:
                await self._fill(latest, "were committed but not received")

    async def _fill(self, upto: int, why: str) -> None:
        """Hand on the seqs after the position up to `upto`, read from the store (lock held)."""
        first, filled = self.position + 1, 0
        while self.position < upto:
            page = await self._store.page(self.channel, self.position, upto, FILL_PAGE)
            if not page or page[0].seq != self.position + 1:
                # No holes below the newest seq: a page that is empty or starts late can
                # only mean trimmed, and the streams cannot be made whole.
                resume_at = page[0].seq - 1 if page else upto
                logger.warning(
                    "channel %r: seqs %d..%d are no longer stored; ending its streams",
                    self.channel,
                    self.position + 1,
                    resume_at,
                )
                await self._outlet.end_streams("history_trimmed")
                self.position = resume_at
                if not page:
                    break
            events = [_as_message(self.channel, row) for row in page]
            self.position = events[-1]["seq"]
            await self._outlet.fan_out(events)
            filled += len(events)
        self._outlet.gap_filled(filled)
        logger.warning(
            "channel %r: seqs %d..%d %s; %d filled from the store", self.channel, first, upto, why, filled
        )


def _as_message(channel: str, row: StoredEvent) -> EventMessage:
    # The time it was stored stands for its commit time: an event that reaches streams
    # from the store is late, and its delivery lag says by how much.
    return {
        "type": EVENT_MESSAGE,
        "channel": channel,
        "seq": row.seq,
        "event": row.type,
        "data": row.data,
        "committed_at": row.created.timestamp(),
    }


async def reconcile(store: StoreReader, sequencers: Iterable[Sequencer]) -> None:
    """Catch every started sequencer up with the store, in one query.

    A message can vanish without a later one revealing the gap: pub/sub drops what is
    published while the Redis connection is being re-established, and a publisher can
    die between commit and broadcast. Run regularly, this makes such an event late
    rather than never.
    """
    started = {s.channel: s for s in sequencers if s.ready.is_set() and s.error is None and not s.stopped}
    if not started:
        return
    latest = await store.last_seqs(list(started))
    failed: BaseException | None = None
    for name, sequencer in started.items():
        try:
            await sequencer.catch_up(latest[name])
        except Exception as exc:  # the others are still caught up; the first error is raised
            failed = failed or exc
    if failed is not None:
        raise failed
