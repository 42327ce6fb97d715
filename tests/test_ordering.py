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
