"""Storing for async publishers: one store thread per process, commits shared.

asend_event/asend_events must not hold the event loop while the database works, so the
store runs on a thread. One thread for the process, with a database connection it keeps
while events keep coming (a connection per event would cost more than the event); after
IDLE_CLOSE_SECONDS without any, it closes the connection and ends, and the next event
starts it again. Events that coroutines hand in while a commit is under way wait for it
and are then stored together in one transaction (a group commit), so ten coroutines
publishing at once cost about one commit per round, not ten; each coroutine gets back
its own events, with the seqs of the order they were handed in. A failure (the database
down) is raised in every coroutine of that round.

Why not loop.run_in_executor: between the coroutine and the thread, and back, it takes
four turns of the event loop and a future chained to another; here a coroutine's
events go to the thread through a queue and come back with one call_soon_threadsafe per
round and loop (ARCHITECTURE.md, "Performance notes").
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import threading
from collections import deque
from collections.abc import Iterable
from typing import TYPE_CHECKING

from django.db import connection

from events.publish import Prepared

if TYPE_CHECKING:
    from events.models import Event

IDLE_CLOSE_SECONDS = 1.0
# Events stored in one transaction at most: bounds how long one round holds the lock of
# the channel rows it bumps.
MAX_ROUND = 1000

# (events, the loop of the coroutine waiting for them, its future)
Waiting = tuple[list[Prepared], asyncio.AbstractEventLoop, "asyncio.Future[list[Event]]"]


def _store_round(prepared: list[Prepared]) -> list[Event]:
    from events import publish

    try:
        return publish.send_prepared(prepared)
    except Exception:
        # The connection may be what failed (the database restarted): the next round
        # connects afresh.
        connection.close()
        raise


class StoreThread:
    """The process's store thread and the events waiting for its next round."""

    def __init__(self) -> None:
        self._reset()

    def _reset(self) -> None:
        # Also in a forked child (os.register_at_fork below): it has no copy of the
        # thread, and the lock may have been held at the moment of the fork.
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._waiting: deque[Waiting] = deque()
        # Loops with a wake-up of the thread scheduled.
        self._kicks: set[asyncio.AbstractEventLoop] = set()
        self._thread: threading.Thread | None = None

    def submit(self, prepared: list[Prepared], future: asyncio.Future[list[Event]]) -> None:
        loop = future.get_loop()
        with self._lock:
            self._waiting.append((prepared, loop, future))
            kick = loop not in self._kicks
            self._kicks.add(loop)
        if kick:
            # The thread is woken at the end of this turn of the loop, once every
            # coroutine ready to run has handed in its events: they share the round.
            loop.call_soon(self._wake_up, loop)

    def _wake_up(self, loop: asyncio.AbstractEventLoop) -> None:
        with self._lock:
            self._kicks.discard(loop)
            if self._thread is not None:
                self._wake.notify()
                return
            # A daemon: it must never keep a process alive; it is idle (no transaction
            # open) whenever no coroutine is waiting on it.
            thread = self._thread = threading.Thread(target=self._run, name="events-store", daemon=True)
        try:
            thread.start()
        except RuntimeError as exc:  # no thread to be had (at interpreter exit, say)
            with self._lock:
                self._thread = None
                waiting, self._waiting = list(self._waiting), deque()
            _settle(waiting, exc)

    def _run(self) -> None:
        try:
            while round_ := self._next_round():
                prepared = [item for items, _, _ in round_ for item in items]
                try:
                    stored = _store_round(prepared)
                except Exception as exc:
                    _settle(round_, exc)
                else:
                    _settle(round_, stored)
        finally:
            connection.close()
            with self._lock:
                # Ended by a bug rather than idleness: the next wake-up starts another.
                if self._thread is threading.current_thread():
                    self._thread = None

    def _next_round(self) -> list[Waiting]:
        """What is waiting (up to MAX_ROUND events), once there is any; [] once idle for
        IDLE_CLOSE_SECONDS, and the thread ends."""
        with self._lock:
            round_: list[Waiting] = []
            while not round_:
                while not self._waiting:
                    if not self._wake.wait(IDLE_CLOSE_SECONDS) and not self._waiting:
                        self._thread = None
                        return []
                size = 0
                while self._waiting and (not round_ or size + len(self._waiting[0][0]) <= MAX_ROUND):
                    items, loop, future = self._waiting.popleft()
                    # A coroutine cancelled before its round began: its events are not
                    # stored. (Cancelled later, they are stored and broadcast; only the
                    # answer is lost.)
                    if not future.cancelled():
                        round_.append((items, loop, future))
                        size += len(items)
            return round_


def _settle(round_: list[Waiting], outcome: list[Event] | Exception) -> None:
    """Each coroutine's share of the round, or the round's failure, through its loop."""
    by_loop: dict[asyncio.AbstractEventLoop, list[tuple[asyncio.Future[list[Event]], object]]] = {}
    start = 0
    for items, loop, future in round_:
        share: object = outcome if isinstance(outcome, Exception) else outcome[start : start + len(items)]
        start += len(items)
        by_loop.setdefault(loop, []).append((future, share))
    for loop, answers in by_loop.items():
        with contextlib.suppress(RuntimeError):  # a closed loop: nobody is waiting any more
            loop.call_soon_threadsafe(_answer, answers)


def _answer(answers: Iterable[tuple[asyncio.Future[list[Event]], object]]) -> None:
    for future, share in answers:
        if future.done():
            continue
        if isinstance(share, Exception):
            future.set_exception(share)
        else:
            future.set_result(share)  # type: ignore[arg-type]


_thread = StoreThread()
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_thread._reset)


async def submit(prepared: list[Prepared]) -> list[Event]:
    """Store checked events with the next round; their stored Events, in order."""
    future: asyncio.Future[list[Event]] = asyncio.get_running_loop().create_future()
    _thread.submit(prepared, future)
    return await future
