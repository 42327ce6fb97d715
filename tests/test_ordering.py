"""Ids are safe to resume from under concurrent publishers (events/store.py docstring).

The trap: ids from a shared sequence can commit out of order, so a reader that saw
id 12 later finds 11 appear, and a resume "after 12" loses 11. Here a publisher whose
transaction holds seq N makes every other publisher of the channel wait until N is
committed (or rolled back): a later seq is never visible before an earlier one.
Runs on the database the suite runs on (SQLite, or PostgreSQL via DATABASE_URL).
"""

from __future__ import annotations

import threading
import time
import uuid

import pytest
from django.db import connection, transaction

from events import send_event, store

pytestmark = pytest.mark.django_db(transaction=True)


def visible_seqs(channel: str) -> list[int]:
    from events.models import Event

    return sorted(Event.objects.filter(channel=channel).values_list("seq", flat=True))


def in_thread(target, *args) -> threading.Thread:
    def run() -> None:
        try:
            target(*args)
        finally:
            connection.close()

    thread = threading.Thread(target=run)
    thread.start()
    return thread


def test_a_later_seq_never_commits_before_an_earlier_one() -> None:
    name = f"order-{uuid.uuid4().hex[:8]}"
    send_event(name, 0)
    first_holds_seq = threading.Event()
    release_first = threading.Event()
    results: dict[str, object] = {}
    order: list[str] = []

    def slow_publisher() -> None:
        with transaction.atomic():
            results["slow"] = send_event(name, "slow").seq
            first_holds_seq.set()
            release_first.wait(10)
        order.append("slow committed")

    def fast_publisher() -> None:
        results["fast"] = send_event(name, "fast").seq
        order.append("fast committed")
        # By the time the fast publisher has committed, the slow one's earlier seq is
        # visible. (Comparing when each thread reached its next line is a race: the
        # slow thread may be descheduled between its commit and its append.)
        results["seqs_seen_by_fast"] = visible_seqs(name)

    slow = in_thread(slow_publisher)
    assert first_holds_seq.wait(10)
    fast = in_thread(fast_publisher)
    time.sleep(0.5)
    # The fast publisher is waiting: nothing after seq 1 is visible yet.
    assert visible_seqs(name) == [1]
    assert "fast committed" not in order
    release_first.set()
    slow.join(15)
    fast.join(15)
    assert len(order) == 2
    assert results["seqs_seen_by_fast"] == [1, 2, 3]
    assert (results["slow"], results["fast"]) == (2, 3)
    assert visible_seqs(name) == [1, 2, 3]


def test_a_rolled_back_seq_is_reused_so_there_is_no_hole() -> None:
    name = f"order-{uuid.uuid4().hex[:8]}"
    send_event(name, 1)
    with pytest.raises(RuntimeError), transaction.atomic():
        send_event(name, "rolled back")
        raise RuntimeError
    assert send_event(name, 2).seq == 2
    assert visible_seqs(name) == [1, 2]


def test_many_concurrent_publishers_give_contiguous_seqs() -> None:
    name = f"order-{uuid.uuid4().hex[:8]}"
    threads = [in_thread(lambda: [send_event(name, i) for i in range(10)]) for _ in range(6)]
    for thread in threads:
        thread.join(60)
    assert visible_seqs(name) == list(range(1, 61))
    assert store.last_seqs([name]) == {name: 60}


@pytest.mark.parametrize("history", [None, 20], ids=["all-kept", "trimmed-meanwhile"])
def test_bulk_atomic_and_async_publishers_together_lose_and_duplicate_nothing(settings, history) -> None:
    """Publishers on every path at once, on two shared channels: threads sending lists
    (send_events), threads looping send_event inside transaction.atomic(), plain
    send_event, and coroutines (asend_event, asend_events) on an event loop of their
    own. Every channel's seqs come out contiguous, every payload is stored once, and
    the channel layer carries every event exactly once. With a short history, trims run
    among them (lists trim in their own transaction, the rest after commit): what is
    kept is still contiguous, the newest `history` and less than a tenth more."""
    import asyncio
    import json

    if history is not None:
        settings.EVENTS_HISTORY_PER_CHANNEL = history

    from events import asend_event, asend_events, broadcaster, send_events
    from tests.layer_probe import GroupListener

    # Sorted: a transaction that publishes to several channels does so in name order,
    # the order send_events locks them in (README: publish in a fixed order).
    names = sorted(f"order-{uuid.uuid4().hex[:8]}" for _ in range(2))
    rounds = 5

    def bulk(worker: int) -> None:
        for r in range(rounds):
            send_events([{"channel": names[i % 2], "data": f"bulk-{worker}-{r}-{i}"} for i in range(10)])

    def atomic_loop(worker: int) -> None:
        for r in range(rounds):
            with transaction.atomic():
                for i in range(6):
                    send_event(names[i % 2], f"atomic-{worker}-{r}-{i}")

    def single(worker: int) -> None:
        for i in range(20):
            send_event(names[i % 2], f"single-{worker}-{i}")

    def coroutines() -> None:
        async def one(worker: int) -> None:
            for i in range(20):
                await asend_event(names[i % 2], f"async-{worker}-{i}")

        async def many(worker: int) -> None:
            for r in range(rounds):
                await asend_events(
                    [{"channel": names[i % 2], "data": f"alist-{worker}-{r}-{i}"} for i in range(4)]
                )

        async def main() -> None:
            await asyncio.gather(*(one(w) for w in range(5)), *(many(w) for w in range(2)))

        asyncio.run(main())

    expected = {
        *(f"bulk-{w}-{r}-{i}" for w in range(2) for r in range(rounds) for i in range(10)),
        *(f"atomic-{w}-{r}-{i}" for w in range(2) for r in range(rounds) for i in range(6)),
        *(f"single-{w}-{i}" for w in range(2) for i in range(20)),
        *(f"async-{w}-{i}" for w in range(5) for i in range(20)),
        *(f"alist-{w}-{r}-{i}" for w in range(2) for r in range(rounds) for i in range(4)),
    }
    with GroupListener(names[0]) as first, GroupListener(names[1]) as second:
        threads = [
            *(in_thread(bulk, w) for w in range(2)),
            *(in_thread(atomic_loop, w) for w in range(2)),
            *(in_thread(single, w) for w in range(2)),
            in_thread(coroutines),
        ]
        for thread in threads:
            thread.join(120)
        assert not any(thread.is_alive() for thread in threads)
        broadcaster.flush(30)
        counts = {name: store.last_seqs([name])[name] for name in names}
        received = {
            names[0]: first.messages(count=counts[names[0]], timeout=10),
            names[1]: second.messages(count=counts[names[1]], timeout=10),
        }
    from events.models import Event

    payloads = [json.loads(d) for d in Event.objects.filter(channel__in=names).values_list("data", flat=True)]
    assert sum(counts.values()) == len(expected)
    if history is None:
        assert sorted(payloads) == sorted(expected)
    else:
        assert set(payloads) <= expected and len(set(payloads)) == len(payloads)
    for name in names:
        kept = visible_seqs(name)
        if history is None:
            assert kept == list(range(1, counts[name] + 1))
        else:
            assert history <= len(kept) < history + history // 10, (name, len(kept))
            assert kept == list(range(counts[name] - len(kept) + 1, counts[name] + 1))
        seqs = [m["seq"] for m in received[name]]
        # Lost or duplicated on the layer: every seq exactly once.
        assert sorted(seqs) == list(range(1, counts[name] + 1)), (name, len(seqs), counts[name])


@pytest.mark.skipif(connection.vendor != "postgresql", reason="SQLite locks the whole database: no deadlocks")
def test_a_bulk_send_chosen_as_a_deadlock_victim_is_retried() -> None:
    """A transaction that locks channel b then a, against send_events([a, b]) (name
    order): PostgreSQL aborts the one whose wait began first, here the bulk send, which
    stored nothing and is retried once the other has committed."""
    from events import send_events

    a, b = sorted(f"order-{uuid.uuid4().hex[:8]}" for _ in range(2))
    b_locked, bulk_done = threading.Event(), threading.Event()
    results: dict[str, object] = {}

    def reversed_transaction() -> None:
        with transaction.atomic():
            send_event(b, "reversed b")
            b_locked.set()
            time.sleep(0.3)  # the bulk send now waits for b
            send_event(a, "reversed a")

    def bulk() -> None:
        assert b_locked.wait(10)
        results["bulk"] = [
            e.sse_id for e in send_events([{"channel": a, "data": 1}, {"channel": b, "data": 2}])
        ]
        bulk_done.set()

    threads = [in_thread(reversed_transaction), in_thread(bulk)]
    for thread in threads:
        thread.join(30)
    assert bulk_done.is_set()
    # The reversed transaction won (seq 1 of both), the retried bulk send came after.
    assert results["bulk"] == [f"{a}:2", f"{b}:2"]
    assert visible_seqs(a) == [1, 2] and visible_seqs(b) == [1, 2]
