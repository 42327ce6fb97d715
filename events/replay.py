"""What replays may hold: a page at a time per stream, within a per-process budget.

A replay reads the store one page at a time, each page bounded in bytes (half of
EVENTS_MAX_QUEUED_BYTES, at least one event), and writes it out at once, once its client
has taken all but a quarter of EVENTS_MAX_QUEUED_BYTES. The bytes it has read count
against the process's EVENTS_REPLAY_BUDGET_BYTES until its client has taken them down
to that quarter; a replay that would go over waits for the budget (holding no page
and no budget meanwhile), first come first served. So the replays of a process hold at
most the budget plus a quarter of EVENTS_MAX_QUEUED_BYTES each. A replay whose client reads
slower than EVENTS_REPLAY_MIN_BYTES_PER_SECOND is ended (the consumer decides that),
which gives its budget back: the client resumes later from its last id.
"""

from __future__ import annotations

import asyncio
import collections
import weakref

from events.conf import conf

# A page never holds more events than this, however small they are.
PAGE_ROWS = 500


def page_bytes() -> int:
    return max(1, conf.max_queued_bytes // 2)


class ReplayBudget:
    """A byte count shared by the replays of one event loop (one daphne process)."""

    def __init__(self) -> None:
        self.used = 0
        self._waiters: collections.deque[tuple[int, asyncio.Future[None]]] = collections.deque()

    def _fits(self, nbytes: int) -> bool:
        # Alone, a replay always gets its page, even one larger than the whole budget.
        return self.used == 0 or self.used + nbytes <= conf.replay_budget_bytes

    async def acquire(self, nbytes: int, returning: int = 0) -> None:
        """Take `nbytes`, waiting in turn while they do not fit; `returning`, what the
        caller held until now, is given back first (a replay never waits holding any)."""
        if returning:
            self.release(returning)
        if not self._waiters and self._fits(nbytes):
            self.used += nbytes
            return
        waiter = asyncio.get_running_loop().create_future()
        self._waiters.append((nbytes, waiter))
        try:
            await waiter
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():
                self.release(nbytes)  # granted just as we were cancelled: give it back
            else:
                self._wake()
            raise

    def release(self, nbytes: int) -> None:
        """Give back `nbytes` (negative: take that much more, never waiting)."""
        self.used -= nbytes
        if nbytes > 0:
            self._wake()

    def _wake(self) -> None:
        while self._waiters:
            nbytes, waiter = self._waiters[0]
            if waiter.done():
                self._waiters.popleft()
                continue
            if not self._fits(nbytes):
                return
            self._waiters.popleft()
            self.used += nbytes
            waiter.set_result(None)


_budgets: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, ReplayBudget] = weakref.WeakKeyDictionary()


def get_budget() -> ReplayBudget:
    loop = asyncio.get_running_loop()
    budget = _budgets.get(loop)
    if budget is None:
        budget = _budgets[loop] = ReplayBudget()
    return budget


class Share:
    """What one replay holds of its process's budget: a page's bound while it reads the
    page, then the bytes of the page still queued for its client."""

    __slots__ = ("budget", "held")

    def __init__(self, budget: ReplayBudget) -> None:
        self.budget = budget
        self.held = 0

    async def for_page(self, bound: int) -> None:
        """Wait for room for a page of at most `bound` bytes; what is still held is
        given back first, so that two replays never wait on each other's bytes."""
        returning, self.held = self.held, 0
        await self.budget.acquire(bound, returning)
        self.held = bound

    def settle(self, kept: int) -> None:
        """Hold at most `kept` bytes: what a page turned out to hold, or what is still
        queued for the client (it has taken the rest)."""
        if self.held > kept:
            self.budget.release(self.held - kept)
            self.held = kept
