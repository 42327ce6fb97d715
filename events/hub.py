"""The per-process fan-out hub: one channel-layer listener for all local streams.

Intentional divergence from the textbook Channels consumer (every stream joins the
group and formats its own frame): here one hub per process and event loop owns a
single layer channel, joins the group of each SSE channel that has local streams,
encodes each frame once and hands the same bytes to every local stream of the channel.

Delivery rules, per SSE channel:
- `seq` increases by one per event (events/store.py). The hub delivers seqs in order,
  drops one it has already delivered, and fills a skipped range from the store, so a
  message the layer lost (pub/sub across a Redis reconnect, a publisher whose
  broadcast failed) still reaches the streams as soon as a later one arrives.
- A stream added to a channel is handed everything after the hub's position at that
  moment; the consumer replays from the store up to that position (events/consumers.py).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import contextvars
import logging
import weakref
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any, Protocol

from channels.layers import get_channel_layer

from events import metrics, reauth, sse, store
from events.conf import conf
from events.db import stream_db
from events.log import describe, outage
from events.messages import EVENT_MESSAGE, PING_MESSAGE, EventMessage, group_name
from events.presence import PresenceWriter

logger = logging.getLogger(__name__)

# How long a ping through the layer may take before the hub calls the layer lost.
PING_TIMEOUT_SECONDS = 5.0
# Longest gap between pings; shorter when the heartbeat is shorter.
PING_INTERVAL_SECONDS = 5.0
# A ping published while the subscription is being re-established (a Redis restart) is
# dropped by pub/sub: a probe sends another this often until something arrives.
PING_RESEND_SECONDS = 0.25
# Once the layer is lost, the hub probes it this often, so that it notices (and says)
# within a fraction of a second that it is back.
LOST_PROBE_SECONDS = 0.25
# Group memberships of the core Redis layer expire (group_expiry, a day by default);
# joining again well before that keeps long-lived streams receiving. A no-op on pub/sub.
GROUP_REFRESH_SECONDS = 3600.0
# No layer call may hang a stream's set-up or clean-up for longer than this (while
# Redis is unreachable the client library can otherwise retry for a long time).
LAYER_TIMEOUT_SECONDS = 5.0


class Stream(Protocol):
    """What the hub needs of a local stream (the SSE consumer)."""

    channels: tuple[str, ...]
    last_write: float

    async def deliver(self, channel: str, seq: int, frame: bytes, body: bytes) -> None: ...

    async def heartbeat(self) -> None: ...

    async def close_stream(self, *, reason: metrics.CloseReason) -> None: ...


@dataclass(eq=False)
class ChannelState:
    subscribers: set[Stream] = field(default_factory=set)
    last_seq: int = 0
    ready: asyncio.Event = field(default_factory=asyncio.Event)
    # Messages that arrived between joining the group and learning the position.
    early: list[EventMessage] = field(default_factory=list)
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    error: BaseException | None = None


_last_seqs = stream_db(store.last_seqs)
_page = stream_db(store.page)
# Gap fills read the store this many events at a time.
FILL_PAGE = 200
# Channel positions read in one query at most (PositionReader).
POSITIONS_PER_QUERY = 500


class PositionReader:
    """Reads channel positions for joins, many channels to a query.

    Every channel asked for while a query is running is read by the next one, so a
    flood of joins costs a few queries rather than one each (and one queue of them).
    """

    def __init__(self) -> None:
        self._wanted: dict[str, list[asyncio.Future[int]]] = {}
        self._task: asyncio.Task[None] | None = None

    async def read(self, channel: str) -> int:
        waiter = asyncio.get_running_loop().create_future()
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
                    positions = await _last_seqs(names)
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
    def __init__(self, layer: Any) -> None:
        self.layer = layer
        self.channel_name: str | None = None
        self.channels: dict[str, ChannelState] = {}
        self.streams: set[Stream] = set()
        # Per channel: orders group_add/group_discard so that a leave and a quick
        # re-join of the same channel reach the layer in the order they happened.
        # Different channels never wait for each other.
        self._membership_locks: dict[str, asyncio.Lock] = {}
        self._membership_users: collections.Counter[str] = collections.Counter()
        self.positions = PositionReader()
        self._started: asyncio.Future[None] | None = None
        self._tasks: list[asyncio.Task[None]] = []
        # Probes waiting for a message to arrive through the layer (see probe()).
        self._arrivals: set[asyncio.Future[None]] = set()
        # Since when the layer is lost (None: it works), and whether the last catch-up
        # with the store failed: each change is logged once, not at every ping.
        self.lost_since: float | None = None
        self._store_failing = False
        # Channels whose streams were ended when the layer was lost; left later.
        self._orphans: set[str] = set()
        # Subscriber counts in Redis (events/presence.py): told of every change to
        # `channels[...].subscribers` below, written from its own task.
        self.presence = PresenceWriter(self)
        # Channels to leave, in order, and the one task that leaves them (unsubscribe).
        self._to_leave: dict[str, None] = {}
        self._leaver: asyncio.Task[None] | None = None
        # The last liveness ping's verdict (for the metrics: a loss is counted once).
        self._layer_up = True

    # -- lifecycle -----------------------------------------------------------------

    async def _ensure_started(self) -> None:
        if self._started is None:
            self._started = asyncio.get_running_loop().create_future()
            try:
                self.channel_name = await self.layer.new_channel("events.hub.")
                # Logouts from any process (events/reauth.py).
                await self._layer_call(self.layer.group_add, reauth.CONTROL_GROUP)
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
                    (self._receive_loop(), "events-hub-receive"),
                    (self._heartbeat_loop(), "events-hub-heartbeat"),
                    (self._liveness_loop(), "events-hub-liveness"),
                    (self.presence.run(), "events-hub-presence"),
                )
            ]
            metrics.layer_state(up=True)
            self._started.set_result(None)
        await self._started

    async def aclose(self) -> None:
        self.positions.cancel()
        for task in self._tasks:
            task.cancel()
        if self._tasks:
            # Bounded: a task stuck in a layer call must not hold up a shutdown.
            await asyncio.wait(self._tasks, timeout=LAYER_TIMEOUT_SECONDS)
        self._tasks = []
        if self._leaver is not None:
            await asyncio.wait([self._leaver], timeout=LAYER_TIMEOUT_SECONDS)
        await self.presence.aclose()  # a clean stop removes this process's counts at once
        channels, self.channels = list(self.channels), {}
        if self.channel_name is not None:
            await self._layer_call(self.layer.group_discard, reauth.CONTROL_GROUP)
            for channel in channels:
                await self._layer_call(self.layer.group_discard, group_name(channel))
        self.streams.clear()
        if self._started is not None:
            metrics.hub_stopped()
        self._started = None

    # -- membership ----------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def _membership(self, channel: str) -> AsyncIterator[None]:
        lock = self._membership_locks.get(channel)
        if lock is None:
            lock = self._membership_locks[channel] = asyncio.Lock()
        self._membership_users[channel] += 1
        try:
            async with lock:
                yield
        finally:
            self._membership_users[channel] -= 1
            if not self._membership_users[channel]:
                del self._membership_users[channel]
                del self._membership_locks[channel]

    async def _layer_call(self, method: Any, group: str) -> None:
        await asyncio.wait_for(method(group, self.channel_name), LAYER_TIMEOUT_SECONDS)

    async def subscribe(self, stream: Stream) -> dict[str, int]:
        """Add a stream; returns, per channel, the last seq it will not be handed.

        From the moment this is called the stream receives every later event of its
        channels through `deliver` (which may run before this returns).
        """
        await self._ensure_started()
        self.streams.add(stream)
        joins = []
        for channel in stream.channels:
            state = self.channels.get(channel)
            if state is None:
                state = self.channels[channel] = ChannelState()
                joins.append(asyncio.create_task(self._join(channel, state)))
            state.subscribers.add(stream)
        self.presence.changed()
        if joins:
            # A failed join is reported through state.error below.
            await asyncio.gather(*joins, return_exceptions=True)
        if stream not in self.streams:
            # Ended while joining: the caller sees it closed and leaves; no position.
            return dict.fromkeys(stream.channels, 0)
        positions = {}
        for channel in stream.channels:
            state = self.channels.get(channel)
            if state is None:
                # Dropped while joining: the layer was lost meanwhile (_drop_all).
                raise ConnectionError(f"channel {channel!r} was dropped: the channel layer was lost")
            await state.ready.wait()
            if state.error is not None:
                raise RuntimeError(f"joining channel {channel!r} failed") from state.error
            positions[channel] = state.last_seq
        return positions

    async def unsubscribe(self, stream: Stream) -> None:
        self.streams.discard(stream)
        # Before the awaits below as well as after each removal: the presence writer
        # may run in between, and the last state must always be written.
        self.presence.changed()
        for channel in stream.channels:
            state = self.channels.get(channel)
            if state is None:
                continue
            state.subscribers.discard(stream)
            self.presence.changed()
            if not state.subscribers:
                del self.channels[channel]
                # Left by a task of its own: a stream ended from inside the fan-out (a
                # slow reader) must not hold up delivery to the others for a layer
                # call. One leave at a time: the layer orders its calls in one queue,
                # and the leaves of a client dropping many streams must not get
                # ahead of every other stream's joins.
                self._to_leave[channel] = None
                if self._leaver is None:
                    self._leaver = asyncio.create_task(self._leave_queued(), name="events-hub-leave")

    async def _leave_queued(self) -> None:
        try:
            while self._to_leave:
                channel = next(iter(self._to_leave))
                del self._to_leave[channel]
                await self._leave(channel)
        finally:
            self._leaver = None

    async def _leave(self, channel: str) -> None:
        try:
            async with self._membership(channel):
                if channel in self.channels:
                    return  # subscribed again meanwhile: its join keeps the membership
                await self._layer_call(self.layer.group_discard, group_name(channel))
        except Exception as exc:
            # Redis is down: the liveness check ends everything and the
            # subscription is gone with the connection anyway.
            logger.warning("leaving the group of %r failed: %r", channel, exc)

    async def _join(self, channel: str, state: ChannelState) -> None:
        try:
            async with self._membership(channel):
                if self.channels.get(channel) is not state:
                    # Every stream of it ended while the join waited its turn (a client
                    # that opens and drops streams): no layer call for nobody.
                    state.error = RuntimeError("no stream is left on the channel")
                    state.ready.set()
                    return
                await self._layer_call(self.layer.group_add, group_name(channel))
            # Read the position only once the group is joined: an event committed
            # before this read is covered by it, one committed after arrives as a message.
            last_seq = await self.positions.read(channel)
        except Exception as exc:
            if outage(exc):
                logger.warning("joining channel %r failed (%s)", channel, describe(outage(exc)))
            else:
                logger.exception("joining channel %r failed", channel)
            state.error = exc
            if self.channels.get(channel) is state:
                del self.channels[channel]
            state.ready.set()
            return
        async with state.lock:
            state.last_seq = last_seq
            state.ready.set()
            early, state.early = state.early, []
            for message in early:
                await self._accept(channel, state, message)

    # -- delivery ------------------------------------------------------------------

    async def _receive_loop(self) -> None:
        while True:
            message = await self.layer.receive(self.channel_name)
            # Any message proves the layer alive, not only our ping: behind a long
            # backlog of events the ping itself may take longer than its timeout.
            for arrival in self._arrivals:
                if not arrival.done():
                    arrival.set_result(None)
            # Let the event loop run between two events: a backlog taken from the
            # layer's queue would otherwise be fanned out without Twisted ever
            # flushing a socket in between (and slow-reader limits would trip).
            await asyncio.sleep(0)
            if message.get("type") == PING_MESSAGE:
                continue
            if message.get("type") == reauth.LOGOUT_MESSAGE:
                reauth.logged_out(message.get("session"))
                continue
            if message.get("type") != EVENT_MESSAGE:
                continue
            channel = message.get("channel")
            state = self.channels.get(channel)  # type: ignore[arg-type]
            if state is None:
                continue
            if not state.ready.is_set():
                state.early.append(message)  # type: ignore[arg-type]
                continue
            try:
                async with state.lock:
                    await self._accept(channel, state, message)  # type: ignore[arg-type]
            except Exception as exc:
                if outage(exc):  # a gap to fill while the store is down
                    logger.warning("delivering %s:%s failed (%s)", channel, message.get("seq"), describe(exc))
                else:
                    logger.exception("delivering %r failed", message)

    async def _accept(self, channel: str, state: ChannelState, message: EventMessage) -> None:
        seq = message["seq"]
        if seq <= state.last_seq:
            return  # already delivered (from the store or an earlier message)
        if seq > state.last_seq + 1:
            await self._fill(channel, state, seq - 1, "did not arrive from the layer")
        await self._deliver(
            channel, state, seq, message["event"], message["data"], message.get("committed_at")
        )

    async def _fill(self, channel: str, state: ChannelState, upto: int, why: str) -> None:
        """Deliver seqs after state.last_seq up to `upto` from the store (lock held)."""
        first, filled = state.last_seq + 1, 0
        while state.last_seq < upto:
            missed = await _page(channel, state.last_seq, upto, FILL_PAGE)
            if not missed or missed[0].seq != state.last_seq + 1:
                # Trimmed before we could deliver it (this process fell behind by more
                # than EVENTS_HISTORY_PER_CHANNEL): the streams cannot be made whole.
                # End them; each resumes, and is told by a stream-reset.
                # (Seqs have no holes below the newest, events/store.py: a page that is
                # empty or starts late can only mean trimmed.)
                resume_at = missed[0].seq - 1 if missed else upto
                logger.warning(
                    "channel %r: seqs %d..%d are no longer stored; ending its %d streams",
                    channel,
                    state.last_seq + 1,
                    resume_at,
                    len(state.subscribers),
                )
                await _close_all(list(state.subscribers), "history_trimmed")
                state.last_seq = resume_at
                if not missed:
                    break
            for event in missed:
                await self._deliver(channel, state, event.seq, event.type, event.data)
            filled += len(missed)
        metrics.gap_filled(filled)
        logger.warning(
            "channel %r: seqs %d..%d %s; %d filled from the store", channel, first, upto, why, filled
        )

    async def _reconcile(self) -> None:
        """Catch up every channel with the store.

        A message can vanish without a later one revealing the gap: pub/sub drops what
        is published while the Redis connection is being re-established, and a
        publisher can die between commit and broadcast. One query per interval finds
        those, so such an event arrives late rather than never.
        """
        seen = {name: state for name, state in self.channels.items() if state.ready.is_set()}
        if not seen:
            return
        latest = await _last_seqs(list(seen))
        for name, state in seen.items():
            # A channel left (and maybe joined afresh) during the query is not ours to fill.
            if self.channels.get(name) is not state or latest[name] <= state.last_seq:
                continue
            async with state.lock:
                if latest[name] > state.last_seq:
                    await self._fill(name, state, latest[name], "were committed but not received")

    async def _deliver(
        self,
        channel: str,
        state: ChannelState,
        seq: int,
        event: str,
        data: str,
        committed_at: float | None = None,
    ) -> None:
        state.last_seq = seq
        body = sse.event_body(data, event)
        frame = sse.id_line(f"{channel}:{seq}") + body
        streams = list(state.subscribers)
        for stream in streams:
            try:
                await stream.deliver(channel, seq, frame, body)
            except Exception:
                logger.exception("writing to a stream failed")
        # Once per event, not per stream: the fan-out stays free of metric calls.
        metrics.delivered(len(streams), committed_at)

    async def _heartbeat_loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            # Ticks at a quarter of the interval; a stream idle for half of it gets a
            # comment. So the longest idle gap is three quarters of the interval, with
            # a quarter to spare for a busy event loop.
            interval = conf.heartbeat_seconds
            await asyncio.sleep(interval / 4)
            metrics.flush()  # bytes of heartbeats and replays, when no event comes
            now = loop.time()
            for stream in list(self.streams):
                if now - stream.last_write >= interval / 2:
                    try:
                        await stream.heartbeat()
                    except Exception:
                        logger.exception("heartbeat to a stream failed")

    async def probe(self, timeout: float) -> None:
        """Return once a message has come in through this process's own subscription
        after the call; raise (TimeoutError, or the layer's error) if none does in time.

        A fresh connection to Redis can work while the subscription the hub listens on
        is still being re-established; only a round trip through it shows that live
        events reach this process's streams (the liveness loop and /healthz ask here).
        """
        await self._ensure_started()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        arrival: asyncio.Future[None] = loop.create_future()
        self._arrivals.add(arrival)
        try:
            while True:
                remaining = deadline - loop.time()
                if remaining <= 0:
                    raise TimeoutError(f"nothing came back through the channel layer within {timeout:g} s")
                await asyncio.wait_for(self.layer.send(self.channel_name, {"type": PING_MESSAGE}), remaining)
                done, _ = await asyncio.wait([arrival], timeout=min(PING_RESEND_SECONDS, remaining))
                if done:
                    return
        finally:
            self._arrivals.discard(arrival)

    async def _liveness_loop(self) -> None:
        """Ping ourselves through the layer; if nothing comes back, the layer is lost.

        The pub/sub layer hides a Redis outage (it logs and retries inside its own
        task), and messages published meanwhile are gone. So when a probe fails, every
        local stream is ended: clients reconnect, and resume from the store once Redis
        answers again. The hub's channel positions are dropped with them, so that the
        next streams join afresh. While lost, the layer is probed every
        LOST_PROBE_SECONDS; the loss and the recovery are logged once each.
        """
        loop = asyncio.get_running_loop()
        last_refresh = loop.time()
        while True:
            interval = min(PING_INTERVAL_SECONDS, conf.heartbeat_seconds)
            await asyncio.sleep(interval if self.lost_since is None else LOST_PROBE_SECONDS)
            try:
                await self.probe(PING_TIMEOUT_SECONDS)
            except Exception as exc:
                if self.lost_since is None:
                    self.lost_since = loop.time()
                    logger.error(
                        "channel layer lost (%s); ending %d local streams", describe(exc), len(self.streams)
                    )
                metrics.layer_state(up=False, lost_now=self._layer_up)
                self._layer_up = False
                # Also streams opened while it is lost: they may be deaf.
                await self._drop_all()
                continue
            if self.lost_since is not None:
                logger.warning("channel layer back after %.1f s", loop.time() - self.lost_since)
                self.lost_since = None
            if not self._layer_up:
                metrics.layer_state(up=True)
                self._layer_up = True
            if self._orphans:
                await self._discard_orphans()
            await self._catch_up_with_store()
            if loop.time() - last_refresh > GROUP_REFRESH_SECONDS:
                last_refresh = loop.time()
                for channel in list(self.channels):
                    async with self._membership(channel):
                        await self._layer_call(self.layer.group_add, group_name(channel))

    async def _catch_up_with_store(self) -> None:
        """_reconcile, logging a failing store once (and its return), not at every ping:
        while the database is down, open streams keep their live events."""
        try:
            await self._reconcile()
        except Exception as exc:
            if not self._store_failing:
                self._store_failing = True
                logger.error("catching up channels from the store failed (%s); will retry", describe(exc))
            return
        if self._store_failing:
            self._store_failing = False
            logger.warning("the store answers again; channels caught up")

    async def _drop_all(self) -> None:
        streams, self.streams = list(self.streams), set()
        # The group memberships are left as they are: leaving while Redis is down
        # fails half-way and leaves the layer believing it is still subscribed, while
        # memberships left alone are restored by the Redis client when it reconnects.
        # They are cleaned up once the layer answers again (_discard_orphans).
        self._orphans.update(self.channels)
        self.channels = {}
        await _close_all(streams, "layer_lost")

    async def _discard_orphans(self) -> None:
        for channel in list(self._orphans):
            if channel in self.channels:  # joined again meanwhile: still needed
                self._orphans.discard(channel)
                continue
            try:
                async with self._membership(channel):
                    await self._layer_call(self.layer.group_discard, group_name(channel))
            except Exception:
                return  # try again after the next ping
            self._orphans.discard(channel)


async def _close_all(streams: list[Stream], reason: metrics.CloseReason) -> None:
    """End each stream (its client reconnects and resumes); one failing spoils none."""
    for stream in streams:
        try:
            await stream.close_stream(reason=reason)
        except Exception:
            logger.exception("ending a stream failed")


_hubs: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Hub] = weakref.WeakKeyDictionary()


def get_hub() -> Hub:
    """The hub of the running event loop (one per daphne process)."""
    loop = asyncio.get_running_loop()
    hub = _hubs.get(loop)
    if hub is None:
        layer = get_channel_layer()
        if layer is None:
            raise RuntimeError("events needs a channel layer: set CHANNEL_LAYERS")
        hub = _hubs[loop] = Hub(layer)
    return hub


async def close_hub() -> None:
    """Stop the running loop's hub (tests, shutdown)."""
    loop = asyncio.get_running_loop()
    hub = _hubs.pop(loop, None)
    if hub is not None:
        await hub.aclose()
