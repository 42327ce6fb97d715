"""The per-process replay budget (events/replay.py)."""

from __future__ import annotations

import asyncio

import pytest

from events.replay import ReplayBudget


@pytest.fixture(autouse=True)
def _budget_of_100(settings) -> None:
    settings.EVENTS_REPLAY_BUDGET_BYTES = 100


async def test_a_replay_over_the_budget_waits_until_bytes_are_given_back() -> None:
    budget = ReplayBudget()
    await budget.acquire(60)
    second = asyncio.create_task(budget.acquire(60))
    await asyncio.sleep(0.01)
    assert not second.done() and budget.used == 60
    budget.release(10)
    await asyncio.sleep(0.01)
    assert not second.done()  # 50 + 60 is still over 100
    budget.release(10)
    await asyncio.wait_for(second, 1)
    assert budget.used == 100


async def test_waiters_are_served_first_come_first_served() -> None:
    budget = ReplayBudget()
    await budget.acquire(90)
    order: list[str] = []

    async def take(name: str, nbytes: int) -> None:
        await budget.acquire(nbytes)
        order.append(name)

    big = asyncio.create_task(take("big", 80))
    await asyncio.sleep(0)
    small = asyncio.create_task(take("small", 5))
    await asyncio.sleep(0.01)
    # The small one would fit now, but must not overtake the one that came first.
    assert order == []
    budget.release(90)
    await asyncio.wait_for(asyncio.gather(big, small), 1)
    assert order == ["big", "small"]
    assert budget.used == 85


async def test_alone_a_page_larger_than_the_budget_is_allowed() -> None:
    budget = ReplayBudget()
    await asyncio.wait_for(budget.acquire(500), 1)
    assert budget.used == 500


async def test_a_cancelled_waiter_holds_nothing_and_blocks_no_one() -> None:
    budget = ReplayBudget()
    await budget.acquire(100)
    cancelled = asyncio.create_task(budget.acquire(50))
    after = asyncio.create_task(budget.acquire(10))
    await asyncio.sleep(0.01)
    cancelled.cancel()
    budget.release(100)
    await asyncio.wait_for(after, 1)
    assert budget.used == 10
