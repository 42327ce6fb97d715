"""Storing for async publishers: one store thread per process, commits shared.

asend_event/asend_events must not hold the event loop while the database works, so the
store runs on a thread. One thread for the process, with a database connection it keeps
while events keep coming (a connection per event would cost more than the event), closed
after IDLE_CLOSE_SECONDS without any. Events that coroutines hand in while a commit is
under way wait for it and are then stored together in one transaction (a group commit),
so ten coroutines publishing at once cost about one commit per round, not ten; each
coroutine gets back its own events, with the seqs of the order they were handed in.
A failure (the database down) is raised in every coroutine of that round.
"""

from __future__ import annotations

import asyncio
import time
import weakref
from typing import TYPE_CHECKING

from django.db import connection

from events.executors import ProcessExecutor
from events.publish import Prepared

if TYPE_CHECKING:
    from events.models import Event

IDLE_CLOSE_SECONDS = 1.0
# Events stored in one transaction at most: bounds how long one round holds the lock of
# the channel rows it bumps.
MAX_ROUND = 1000


# One thread: rounds follow each other, so the seqs of one loop's rounds are in order.
_thread = ProcessExecutor(1, "events-store")


class _Busy:
    """Rounds under way on any loop: the store thread's connection is not closed under them."""

    count = 0


def _store_round(prepared: list[Prepared]) -> list[Event]:
    from events import publish

    try:
        return publish.send_prepared(prepared)
    except Exception:
        # The connection may be what failed (the database restarted): the next round
        # connects afresh.
        connection.close()
        raise


def _close_if_idle() -> None:
    if not _Busy.count:
        connection.close()


class _Rounds:
    """The events waiting for the next round on one event loop."""

    def __init__(self) -> None:
        self.waiting: list[tuple[list[Prepared], asyncio.Future[list[Event]]]] = []
        self.running = False
        self.last_round = 0.0
        # Referenced while it runs, so never collected mid-round; nothing here refers to
        # the loop once it is idle, so a loop that is closed (asyncio.run) is freed.
        self.task: asyncio.Task[None] | None = None

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            while self.waiting:
                taken, size = 1, len(self.waiting[0][0])
                while taken < len(self.waiting) and size + len(self.waiting[taken][0]) <= MAX_ROUND:
                    size += len(self.waiting[taken][0])
                    taken += 1
                round_, self.waiting = self.waiting[:taken], self.waiting[taken:]
                prepared = [item for items, _ in round_ for item in items]
                _Busy.count += 1
                try:
                    stored = await loop.run_in_executor(_thread.get(), _store_round, prepared)
                except Exception as exc:
                    for _, future in round_:
                        if not future.done():
                            future.set_exception(exc)
                    continue
                except BaseException:  # cancelled: the loop is shutting down
                    for _, future in round_ + self.waiting:
                        future.cancel()
                    self.waiting = []
                    raise
                finally:
                    _Busy.count -= 1
                start = 0
                for items, future in round_:
                    if not future.done():
                        future.set_result(stored[start : start + len(items)])
                    start += len(items)
        finally:
            self.running = False
            self.task = None
            self.last_round = time.monotonic()
            loop.call_later(IDLE_CLOSE_SECONDS, self._close_if_idle)

    def _close_if_idle(self) -> None:
        idle = time.monotonic() - self.last_round >= IDLE_CLOSE_SECONDS * 0.9
        if idle and not self.running and not _Busy.count:
            _thread.get().submit(_close_if_idle)


_rounds: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Rounds] = weakref.WeakKeyDictionary()


async def submit(prepared: list[Prepared]) -> list[Event]:
    """Store checked events with the next round; their stored Events, in order."""
    loop = asyncio.get_running_loop()
    rounds = _rounds.get(loop)
    if rounds is None:
        rounds = _rounds[loop] = _Rounds()
    future: asyncio.Future[list[Event]] = loop.create_future()
    rounds.waiting.append((prepared, future))
    if not rounds.running:
        rounds.running = True
        rounds.task = loop.create_task(rounds.run())
    return await future
