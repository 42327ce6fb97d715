"""The broadcast: committed events to the channel layer, from one publisher thread.

A process keeps one thread running one event loop, so the channel layer's Redis
connection (made per event loop) is opened once and kept, instead of a fresh loop and
connection for every event (what `async_to_sync` per event costs). Publishers hand their
committed events to it and return; the thread sends whatever has queued up meanwhile in
one Redis round trip (a pipeline of PUBLISH commands, the channel layer's own group_send
for a single event), in the order handed in.

Failures are logged in one line per batch, never raised: the events are stored, every
hub compares its position with the store after each liveness ping (events/upkeep.py) and
delivers what was never broadcast, and streams that lost the layer resume from the store.

Forks: a child process (gunicorn --preload, Celery prefork) gets no copy of the thread,
so it starts its own on first use and drops what the parent had queued (the parent sends
those). Exit: an atexit hook waits for the queue to empty, so a script or management
command whose last line is send_event() still broadcasts its events.
"""

from __future__ import annotations

import asyncio
import atexit
import logging
import os
import threading
import time
from collections import deque
from collections.abc import Sequence
from typing import Any

import redis.exceptions
from channels.layers import get_channel_layer

from events import metrics
from events.messages import EventMessage, group_name

logger = logging.getLogger("events.publish")

# The longest one batch may take to reach Redis before it is given up (and logged).
BROADCAST_TIMEOUT_SECONDS = 5.0
# After a failed broadcast, this process skips the layer for this long rather than have
# each batch wait up to BROADCAST_TIMEOUT_SECONDS on a Redis that is down. Skipping loses
# nothing: the events are stored (see the module docstring).
BREAKER_SECONDS = 2.0
# What a channel layer that cannot reach Redis raises.
LAYER_DOWN = (TimeoutError, OSError, redis.exceptions.ConnectionError, redis.exceptions.TimeoutError)
# Messages per Redis round trip: bounds one pipeline's buffer and the time one batch takes.
MAX_PIPELINE = 1000
# Messages queued and not yet sent past which publishers wait for the thread: a Redis
# that is slow (not down) must not let the queue grow without bound.
MAX_PENDING = 20_000
# How long the exit hook waits for queued events to reach Redis.
EXIT_FLUSH_SECONDS = BROADCAST_TIMEOUT_SECONDS + 1.0
# A failure line names this many event ids at most.
IDS_IN_A_LOG_LINE = 5


class Breaker:
    """Open for `seconds` after the channel layer could not be reached: while open, the
    publisher skips the layer (the events are stored; hubs deliver them from the store)."""

    def __init__(self, seconds: float = BREAKER_SECONDS) -> None:
        self.seconds = seconds
        self._open_until = 0.0

    def trip(self) -> None:
        self._open_until = time.monotonic() + self.seconds

    @property
    def is_open(self) -> bool:
        return time.monotonic() < self._open_until

    def close(self) -> None:
        """As if the layer had never failed (a test that ends an outage, a new process)."""
        self._open_until = 0.0


class Publisher:
    """The process's publisher thread and its queue of committed events."""

    def __init__(self) -> None:
        self.breaker = Breaker()
        self._reset()

    def _reset(self) -> None:
        # Also the fork handler: the lock may have been held by the parent's thread at the
        # moment of the fork, so the child gets a new one, and an empty queue.
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._queue: deque[EventMessage] = deque()
        self._pending = 0  # queued or being sent
        self._draining = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._pid = os.getpid()
        self.breaker.close()

    # -- publishers' side (any thread) -----------------------------------------------

    def submit(self, messages: Sequence[EventMessage]) -> None:
        """Queue committed events for broadcast, in order; returns without waiting for
        Redis (unless MAX_PENDING are already waiting)."""
        if not messages:
            return
        with self._lock:
            if self._pid != os.getpid():  # forked without the at-fork hook
                self._reset_in_child_locked()
            loop = self._ensure_thread()
            self._queue.extend(messages)
            self._pending += len(messages)
            if not self._draining:
                self._draining = True
                loop.call_soon_threadsafe(self._start_drain)
            while self._pending > MAX_PENDING and threading.current_thread() is not self._thread:
                self._changed.wait(BROADCAST_TIMEOUT_SECONDS)

    def call_later(self, delay: float, callback: Any, *args: Any) -> None:
        """Run callback(*args) on the publisher thread after `delay` seconds."""
        with self._lock:
            if self._pid != os.getpid():
                self._reset_in_child_locked()
            loop = self._ensure_thread()
        loop.call_soon_threadsafe(loop.call_later, delay, callback, *args)

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until everything queued so far has been sent (or given up); False if
        `timeout` seconds passed first."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._lock:
            if self._pid != os.getpid():
                return True
            while self._pending:
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    return False
                self._changed.wait(left)
        return True

    def _reset_in_child_locked(self) -> None:
        pid = os.getpid()
        self._queue.clear()
        self._pending = 0
        self._draining = False
        self._loop = None
        self._thread = None
        self._pid = pid

    def _ensure_thread(self) -> asyncio.AbstractEventLoop:
        if self._loop is None:
            loop = asyncio.new_event_loop()
            ready = threading.Event()

            def run() -> None:
                asyncio.set_event_loop(loop)
                loop.call_soon(ready.set)
                loop.run_forever()

            # A daemon: it must never keep a process alive; the exit hook flushes.
            self._thread = threading.Thread(target=run, name="events-publisher", daemon=True)
            self._thread.start()
            ready.wait()
            self._loop = loop
        return self._loop

    # -- the publisher thread --------------------------------------------------------

    def _start_drain(self) -> None:
        asyncio.get_running_loop().create_task(self._drain())

    async def _drain(self) -> None:
        while True:
            with self._lock:
                if not self._queue:
                    self._draining = False
                    self._changed.notify_all()
                    return
                batch = [self._queue.popleft() for _ in range(min(MAX_PIPELINE, len(self._queue)))]
            try:
                await self._send(batch)
            finally:
                with self._lock:
                    self._pending -= len(batch)
                    self._changed.notify_all()

    async def _send(self, batch: list[EventMessage]) -> None:
        layer = get_channel_layer()
        if layer is None:
            metrics.broadcast_failed(len(batch))
            logger.error("no channel layer configured; %s stored but not broadcast", _ids(batch))
            return
        if self.breaker.is_open:
            metrics.broadcast_skipped(len(batch))
            logger.warning(
                "broadcast of %s skipped: the channel layer failed moments ago; "
                "stored, subscribers will get them from the store",
                _ids(batch),
            )
            return
        try:
            # asyncio.timeout, not wait_for: no task of its own for every batch.
            async with asyncio.timeout(BROADCAST_TIMEOUT_SECONDS):
                await _send_reconnecting(layer, batch)
        except Exception as exc:
            metrics.broadcast_failed(len(batch))
            if isinstance(exc, LAYER_DOWN):
                # Only a layer that cannot be reached opens the breaker; a bug elsewhere
                # must not make every publisher of the process skip broadcasts.
                self.breaker.trip()
            # One line: a publisher in a shell while Redis is down should not see a page
            # of traceback for events that are safe. The traceback is there at DEBUG.
            logger.error(
                "broadcast of %s failed (%s); stored, and will be replayed", _ids(batch), _describe(exc)
            )
            logger.debug("broadcast of %s failed", _ids(batch), exc_info=True)
        else:
            metrics.broadcast_done(batch)


async def _send_reconnecting(layer: Any, batch: list[EventMessage]) -> None:
    """send_batch, tried once more when the connection fails: the connection this thread
    keeps is broken by a Redis restart, and the client reconnects on the next command;
    without the second try, the first batch after every restart would open the breaker
    and reach subscribers only from the store, seconds later. A batch that partly went
    out is sent again whole: hubs drop a seq they have already delivered."""
    try:
        await send_batch(layer, batch)
    except LAYER_DOWN:
        await send_batch(layer, batch)


async def send_batch(layer: Any, batch: list[EventMessage]) -> None:
    """One event: the layer's group_send. Several: one pipeline per Redis shard when the
    layer is channels-redis's pub/sub layer, which has no batch send of its own; the
    PUBLISH commands are exactly those its group_send would issue, on its connection."""
    if len(batch) > 1:
        shards = _pubsub_shards(layer, batch)
        if shards is not None:
            for shard, commands in shards.items():
                async with shard._lock:  # the layer's own lock for this connection
                    shard._ensure_redis()
                    pipe = shard._redis.pipeline(transaction=False)
                    for redis_channel, payload in commands:
                        pipe.publish(redis_channel, payload)
                    await pipe.execute()
            return
    for message in batch:
        await layer.group_send(group_name(message["channel"]), message)


def _pubsub_shards(layer: Any, batch: list[EventMessage]) -> dict[Any, list[tuple[str, bytes]]] | None:
    """The PUBLISH commands per shard connection, or None for a layer without them
    (the in-memory layer, the list-based Redis layer, another version)."""
    get_layer = getattr(type(layer), "_get_layer", None)
    if get_layer is None or not hasattr(layer, "serialize"):
        return None
    inner = layer._get_layer()  # this event loop's connections
    if not all(hasattr(inner, name) for name in ("_get_group_channel_name", "_get_shard")):
        return None
    shards: dict[Any, list[tuple[str, bytes]]] = {}
    for message in batch:
        redis_channel = inner._get_group_channel_name(group_name(message["channel"]))
        shard = inner._get_shard(redis_channel)
        if not all(hasattr(shard, name) for name in ("_lock", "_ensure_redis", "_redis")):
            return None
        shards.setdefault(shard, []).append((redis_channel, layer.serialize(message)))
    return shards


def _ids(batch: Sequence[EventMessage]) -> str:
    ids = [f"{m['channel']}:{m['seq']}" for m in batch[:IDS_IN_A_LOG_LINE]]
    if len(batch) == 1:
        return f"event {ids[0]}"
    more = f" and {len(batch) - len(ids)} more" if len(batch) > len(ids) else ""
    return f"{len(batch)} events ({', '.join(ids)}{more})"


def _describe(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError):
        return f"no answer within {BROADCAST_TIMEOUT_SECONDS:g} s"
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


publisher = Publisher()


def submit(messages: Sequence[EventMessage]) -> None:
    publisher.submit(messages)


def flush(timeout: float | None = None) -> bool:
    """Wait until every event handed to the publisher thread so far has been broadcast
    (or given up and logged). False if `timeout` passed first."""
    return publisher.flush(timeout)


def _flush_at_exit() -> None:
    if not publisher.flush(EXIT_FLUSH_SECONDS):
        logger.warning(
            "exiting before every event was broadcast; "
            "they are stored and subscribers get them from the store"
        )


atexit.register(_flush_at_exit)
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=publisher._reset)
