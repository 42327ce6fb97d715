"""The per-process fan-out hub: one channel-layer listener for all local streams.

One hub per process and event loop owns a single layer channel, joins the group of each
SSE channel that has local streams, and hands every event to those streams. Its parts:
- events/membership.py: the group joins and leaves, in order per channel;
- events/sequencer.py: each channel's events in order, once each, gaps filled from the
  store (the delivery rules);
- events/fanout.py: a channel's local streams, one encoding per event for all of them;
- events/liveness.py: the ping through the hub's own subscription, and what a lost
  layer ends;
- events/upkeep.py: heartbeats, and reconciliation with the store;
- events/receiver.py: the receive loop, a pass of layer messages at a time;
- events/layer_backlog.py: the messages already queued for the hub, taken in one pass;
- events/presence.py: the subscriber counts in Redis.
The receive loop (the hot path), the heartbeats, the ping, the reconciliation and
the subscriber counts each run as a task of their own.

A stream added to a channel is handed everything after the channel's position at that
moment; the stream replays from the store up to that position (events/resume.py).
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import weakref
from collections.abc import Mapping, Sequence
from typing import Any

from channels.layers import get_channel_layer

from events import metrics, reauth, store, upkeep
from events.db import stream_db
from events.fanout import LocalChannel, Stream, close_all
from events.liveness import Liveness
from events.log import log_failure
from events.membership import LAYER_TIMEOUT_SECONDS, Membership
from events.messages import ChannelLayer, group_name
from events.presence import PresenceWriter
from events.receiver import Receiver
from events.sequencer import StoredEvent

__all__ = ["Hub", "Stream", "close_hub", "get_hub", "running_hub"]

logger = logging.getLogger(__name__)

_last_seqs = stream_db(store.last_seqs)
_page = stream_db(store.page)
# Channel positions read in one query at most (PositionReader).
POSITIONS_PER_QUERY = 500


class Store:
    """The store as the sequencers and the position reads see it: the events table,
    read on the streams' database threads (events/db.py)."""

    async def page(self, channel: str, after: int, upto: int, limit: int) -> Sequence[StoredEvent]:
        rows: Sequence[StoredEvent] = await _page(channel, after, upto, limit)
        return rows

    async def last_seqs(self, channels: list[str]) -> Mapping[str, int]:
        seqs: Mapping[str, int] = await _last_seqs(channels)
        return seqs


class PositionReader:
    """Reads channel positions for joins, many channels to a query.

    Every channel asked for while a query is running is read by the next one, so a
    flood of joins costs a few queries rather than one each (and one queue of them).
    """

    def __init__(self, store: Store) -> None:
        self._store = store
        self._wanted: dict[str, list[asyncio.Future[int]]] = {}
        self._task: asyncio.Task[None] | None = None

    async def read(self, channel: str) -> int:
        waiter: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._wanted.setdefault(channel, []).append(waiter)
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="events-hub-positions")
        return await waiter

    async def _run(self) -> None:
        try:
            while self._wanted:
                names = list(self._wanted)[:POSITIONS_PER_QUERY]
                batch = {name: self._wanted.pop(name) for name in names}
                try:
                    positions = await self._store.last_seqs(names)
                except Exception as exc:
                    for waiters in batch.values():
                        for waiter in waiters:
                            if not waiter.done():
                                waiter.set_exception(exc)
                    continue
                for name, waiters in batch.items():
                    for waiter in waiters:
                        if not waiter.done():
                            waiter.set_result(positions[name])
        finally:
            self._task = None

    def cancel(self) -> None:
        if self._task is not None:
            self._task.cancel()


class Hub:
    def __init__(self, layer: ChannelLayer) -> None:
        self.layer = layer
        # Never replaced, only changed: the tasks and parts below hold them.
        self.channels: dict[str, LocalChannel] = {}
        self.streams: set[Stream] = set()
        # The local streams on several channels: while there is one, a pass keeps the
        # order between channels (events/batching.py).
        self.spanning: set[Stream] = set()
        # Join tasks in flight (see subscribe).
        self._joining: set[asyncio.Task[None]] = set()
        self.store = Store()
        self.positions = PositionReader(self.store)
        self.membership = Membership(layer, wanted=self.channels)
        self.liveness = Liveness(self.membership, self._drop_all)
        self.receiver = Receiver(layer, self.channels, self.spanning, self.liveness.arrivals)
        # Subscriber counts in Redis: told of every change to a channel's subscribers.
        self.presence = PresenceWriter(self)
        self._started: asyncio.Future[None] | None = None
        self._tasks: list[asyncio.Task[None]] = []

    @property
    def lost_since(self) -> float | None:
        """Since when the channel layer is lost (loop time), or None while it works."""
        return self.liveness.lost_since

    async def _ensure_started(self) -> None:
        if self._started is None:
            self._started = asyncio.get_running_loop().create_future()
            try:
                channel_name = await self.membership.open()
                await self.membership.add(reauth.CONTROL_GROUP)  # logouts from any process
            except BaseException as exc:
                self._started.set_exception(exc)
                self._started.exception()  # mark retrieved: later callers re-raise it
                self._started = None
                raise
            # In a context of their own: the hub outlives the request that started it,
            # and a Django view's context holds its thread executor (asgiref's
            # ThreadSensitiveContext), shut down when the view returns.
            self._tasks = [
                asyncio.create_task(coroutine, name=name, context=contextvars.Context())
                for coroutine, name in (
                    (self.receiver.run(channel_name), "events-hub-receive"),
                    (upkeep.heartbeats(self.streams), "events-hub-heartbeat"),
                    (self.liveness.run(lambda: len(self.streams)), "events-hub-liveness"),
                    (
                        upkeep.reconciliation(self.store, self.channels, self.liveness.pinged),
                        "events-hub-reconcile",
                    ),
                    (self.presence.run(), "events-hub-presence"),
                )
            ]
            metrics.layer_state(up=True)
            self._started.set_result(None)
        await self._started

    async def aclose(self) -> None:
        self.positions.cancel()
        tasks = [*self._tasks, *self._joining]
        for task in tasks:
            task.cancel()
        if tasks:
            # Bounded: a task stuck in a layer call must not hold up a shutdown.
            await asyncio.wait(tasks, timeout=LAYER_TIMEOUT_SECONDS)
        self._tasks = []
        await self.presence.aclose()  # a clean stop removes this process's counts at once
        channels = self._forget_all()
        await self.membership.aclose([reauth.CONTROL_GROUP, *map(group_name, channels)])
        self.streams.clear()
        self.spanning.clear()
        if self._started is not None:
            metrics.hub_stopped()
        self._started = None

    async def subscribe(self, stream: Stream) -> dict[str, int]:
        """Add a stream; returns, per channel, the last seq it will not be handed.

        From the moment this is called the stream receives every later event of its
        channels through `deliver` (which may run before this returns).
        """
        await self._ensure_started()
        self.streams.add(stream)
        if len(stream.channels) > 1:
            self.spanning.add(stream)
        joins = []
        for name in stream.channels:
            channel = self.channels.get(name)
            if channel is None:
                channel = self.channels[name] = LocalChannel(name, self.store)
                join = asyncio.create_task(self._join(channel))
                # Held here until done: a shielded task that nothing else holds could be
                # collected mid-way once its first waiter is cancelled.
                self._joining.add(join)
                join.add_done_callback(self._joining.discard)
                joins.append(join)
            channel.subscribers.add(stream)
        self.presence.changed()
        if joins:
            # A failed join is reported through the sequencer's error below. Shielded:
            # other streams of the channel wait for the same join, so cancelling this
            # stream (its client gone, a shutdown) must not cancel the join itself.
            await asyncio.gather(*(asyncio.shield(join) for join in joins), return_exceptions=True)
        if stream not in self.streams:
            # Ended while joining: the caller sees it closed and leaves; no position.
            return dict.fromkeys(stream.channels, 0)
        positions = {}
        for name in stream.channels:
            channel = self.channels.get(name)
            if channel is None:
                # Dropped while joining: the layer was lost meanwhile (_drop_all).
                raise ConnectionError(f"channel {name!r} was dropped: the channel layer was lost")
            sequencer = channel.sequencer
            await sequencer.ready.wait()
            if sequencer.error is not None:
                raise RuntimeError(f"joining channel {name!r} failed") from sequencer.error
            positions[name] = sequencer.position
        return positions

    async def unsubscribe(self, stream: Stream) -> None:
        """Remove a stream. Never waits: the channels it was the last stream of are left
        by a task of the membership's (a stream ended inside the fan-out must not hold
        up delivery to the others for a layer call)."""
        self.streams.discard(stream)
        self.spanning.discard(stream)
        for name in stream.channels:
            channel = self.channels.get(name)
            if channel is None:
                continue
            channel.subscribers.discard(stream)
            if not channel.subscribers:
                del self.channels[name]
                channel.sequencer.stop()
                self.membership.leave(name)
        self.presence.changed()

    async def _join(self, channel: LocalChannel) -> None:
        name, sequencer = channel.name, channel.sequencer
        try:
            if not await self.membership.join(name, lambda: self.channels.get(name) is channel):
                sequencer.fail(RuntimeError("no stream is left on the channel"))
                return
            # Read the position only once the group is joined: an event committed
            # before this read is covered by it, one committed after arrives as a message.
            position = await self.positions.read(name)
        except Exception as exc:
            log_failure(logger, exc, "joining channel %r failed", name)
            sequencer.fail(exc)
            if self.channels.get(name) is channel:
                del self.channels[name]
                sequencer.stop()
            return
        try:
            await sequencer.start(position)
        except Exception as exc:  # a gap in the early messages the store cannot fill now
            log_failure(logger, exc, "catching up channel %r after joining failed", name)

    async def probe(self, timeout: float) -> None:
        """Return once a message has come in through this process's own subscription
        after the call; raise (TimeoutError, or the layer's error) if none does in time
        (/healthz asks here)."""
        await self._ensure_started()
        await self.liveness.probe(timeout)

    def _forget_all(self) -> list[str]:
        names = list(self.channels)
        for channel in self.channels.values():
            channel.sequencer.stop()
        self.channels.clear()
        return names

    async def _drop_all(self) -> None:
        """The layer is lost: end every stream, and forget every channel's position."""
        streams = list(self.streams)
        self.streams.clear()
        self.spanning.clear()
        self.membership.orphan(self._forget_all())
        await close_all(streams, "layer_lost")


_hubs: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Hub] = weakref.WeakKeyDictionary()


def get_hub() -> Hub:
    """The hub of the running event loop (one per daphne process)."""
    loop = asyncio.get_running_loop()
    hub = _hubs.get(loop)
    if hub is None:
        layer: Any = get_channel_layer()
        if layer is None:
            raise RuntimeError("events needs a channel layer: set CHANNEL_LAYERS")
        hub = _hubs[loop] = Hub(layer)
    return hub


def running_hub() -> Hub | None:
    """The running event loop's hub if it has one (without starting one)."""
    return _hubs.get(asyncio.get_running_loop())


async def close_hub() -> None:
    """Stop the running loop's hub (tests, shutdown)."""
    hub = _hubs.pop(asyncio.get_running_loop(), None)
    if hub is not None:
        await hub.aclose()
