"""The event store (events/store.py) against the real test database."""

from __future__ import annotations

import pytest
from django.db import transaction

from events import store
from events.models import Channel, Event
from tests.streams import channel

pytestmark = pytest.mark.django_db


def seqs(name: str) -> list[int]:
    return list(Event.objects.filter(channel=name).order_by("seq").values_list("seq", flat=True))


def test_append_assigns_seq_per_channel() -> None:
    a, b = channel(), channel()
    assert [store.append(a, "t", str(n)).seq for n in range(3)] == [1, 2, 3]
    # Another channel starts its own sequence, and interleaving does not disturb either.
    assert store.append(b, "t", "0").seq == 1
    assert store.append(a, "t", "3").seq == 4
    assert store.append(b, "t", "1").seq == 2
    assert seqs(a) == [1, 2, 3, 4]
    assert seqs(b) == [1, 2]


def test_append_stores_the_event_as_given() -> None:
    name = channel()
    event = store.append(name, "order-paid", '{"id":42}')
    stored = Event.objects.get(pk=event.pk)
    assert (stored.channel, stored.seq, stored.type, stored.data) == (name, 1, "order-paid", '{"id":42}')
    assert stored.sse_id == f"{name}:1"
    assert stored.payload == {"id": 42}


def test_last_seqs_is_zero_for_an_unknown_channel() -> None:
    a, b, unknown = channel(), channel(), channel()
    for _ in range(3):
        store.append(a, "t", "1")
    store.append(b, "t", "1")
    assert store.last_seqs([a, b, unknown]) == {a: 3, b: 1, unknown: 0}
    assert store.last_seqs([]) == {}


def test_page_reads_one_channel_in_seq_order_up_to_a_limit() -> None:
    a, b = channel(), channel()
    stored = [store.append(a, "t", str(n)) for n in range(5)]
    store.append(b, "t", "other")
    assert store.page(a, 0, 5, 100) == stored
    # after < seq <= upto, at most `limit` of them, oldest first.
    assert store.page(a, 1, 4, 100) == stored[1:4]
    assert store.page(a, 1, 5, 2) == stored[1:3]
    assert [e.channel for e in store.page(b, 0, 9, 100)] == [b]


@pytest.mark.parametrize(
    "after, upto", [(3, 3), (3, 1), (5, 9)], ids=["empty-range", "inverted-range", "past-the-end"]
)
def test_page_empty(after: int, upto: int) -> None:
    a = channel()
    for _ in range(5):
        store.append(a, "t", "1")
    assert store.page(a, after, upto, 100) == []
    assert store.page(channel(), 0, 10, 100) == []


def test_page_after_trim_starts_at_the_oldest_retained() -> None:
    a = channel()
    for _ in range(5):
        store.append(a, "t", "1")
    store.trim(a, 2)
    assert [e.seq for e in store.page(a, 0, 5, 100)] == [4, 5]


def test_trim_keeps_the_newest_and_leaves_other_channels() -> None:
    a, b = channel(), channel()
    for _ in range(10):
        store.append(a, "t", "1")
    for _ in range(3):
        store.append(b, "t", "1")
    assert store.trim(a, 4) == 6
    assert seqs(a) == [7, 8, 9, 10]
    assert seqs(b) == [1, 2, 3]
    # The counter is untouched: the next event continues the sequence.
    assert store.last_seqs([a]) == {a: 10}
    assert store.append(a, "t", "1").seq == 11


def test_trim_with_nothing_to_delete() -> None:
    a = channel()
    for _ in range(3):
        store.append(a, "t", "1")
    assert store.trim(a, 3) == 0
    assert store.trim(a, 10) == 0
    assert store.trim(channel(), 1) == 0
    assert seqs(a) == [1, 2, 3]


def test_rolled_back_append_returns_its_seq() -> None:
    a = channel()
    store.append(a, "t", "1")
    with pytest.raises(RuntimeError), transaction.atomic():
        assert store.append(a, "t", "2").seq == 2
        raise RuntimeError("roll back")
    assert store.last_seqs([a]) == {a: 1}
    # No hole: the next event gets the seq the rolled back one had.
    assert store.append(a, "t", "3").seq == 2
    assert seqs(a) == [1, 2]
    assert list(Event.objects.filter(channel=a).order_by("seq").values_list("data", flat=True)) == ["1", "3"]


def test_rolled_back_first_append_leaves_no_channel() -> None:
    a = channel()
    with pytest.raises(RuntimeError), transaction.atomic():
        store.append(a, "t", "1")
        raise RuntimeError("roll back")
    assert not Channel.objects.filter(name=a).exists()
    assert store.last_seqs([a]) == {a: 0}
    assert store.append(a, "t", "2").seq == 1


def test_append_many_returns_the_rows_it_stored() -> None:
    # Interleaved channels, a raw event, text that needs escaping on its way to the
    # database (quotes, backslashes, an escaped NUL in JSON, non-ASCII, line breaks):
    # each returned Event is the stored row, field for field, ids rising in the items' order.
    a, b = channel(), channel()
    store.append(a, "t", "0")
    items = [
        (a, "t", '{"q":"\\"\\\\ \\u0000 é 🙂"}', False),
        (b, "order-paid", "<li>a 'b' \\ c</li>\n<li>d</li>", True),
        (a, "t", "[]", False),
        (b, "t", "1", False),
        (a, "u", "null", False),
    ]
    events = store.append_many(items)
    assert [(e.channel, e.type, e.data, e.raw) for e in events] == items
    assert [(e.channel, e.seq) for e in events] == [(a, 2), (b, 1), (a, 3), (b, 2), (a, 4)]
    ids = [e.pk for e in events]
    assert ids == sorted(ids)
    fields = ("id", "channel", "seq", "type", "data", "raw", "created")
    stored = {row["id"]: row for row in Event.objects.filter(pk__in=ids).values(*fields)}
    assert [{name: getattr(e, name) for name in fields} for e in events] == [stored[pk] for pk in ids]


def test_trim_up_to_a_seq_the_caller_knows() -> None:
    a = channel()
    for _ in range(10):
        store.append(a, "t", "1")
    # The events after the given seq (published meanwhile) count among those kept.
    assert store.trim(a, 4, 8) == 4
    assert seqs(a) == [5, 6, 7, 8, 9, 10]
    assert store.trim(a, 4, 4) == 0
    assert seqs(a) == [5, 6, 7, 8, 9, 10]


def test_trim_takes_what_an_earlier_trim_left() -> None:
    """A trim that never ran (failed, or its process died) leaves no hole behind the
    next: everything up to the bound goes."""
    a = channel()
    for _ in range(30):
        store.append(a, "t", "1")
    Event.objects.filter(channel=a, seq__in=range(5, 12)).delete()  # a later trim's share only
    assert store.trim(a, 10, 30) == 13
    assert seqs(a) == list(range(21, 31))


def test_append_many_of_more_rows_than_one_statement_takes() -> None:
    """SQLite takes 999 parameters a statement: a long list goes in several."""
    a, b = channel(), channel()
    items = [(a if n % 3 else b, "t", str(n), False) for n in range(1000)]
    events = store.append_many(items)
    assert [e.data for e in events] == [str(n) for n in range(1000)]
    assert [e.seq for e in events if e.channel == a] == list(range(1, 667))
    assert [e.seq for e in events if e.channel == b] == list(range(1, 335))
    ids = [e.pk for e in events]
    assert ids == sorted(ids) and len(set(ids)) == 1000
    stored = dict(Event.objects.filter(pk__in=ids).values_list("pk", "data"))
    assert [stored[e.pk] for e in events] == [e.data for e in events]


def _events(*pairs: tuple[str, int]) -> list[Event]:
    return [Event(channel=name, seq=seq) for name, seq in pairs]


@pytest.mark.parametrize(
    "pairs, keep, due",
    [
        ([("a", 5)], 10, {}),  # within the history
        ([("a", 11)], 10, {"a": 11}),  # a batch of 1: every seq past the history
        ([("a", 21)], 20, {}),  # a batch of 2: an odd seq is not a multiple
        ([("a", 22), ("a", 23)], 20, {"a": 23}),  # the bound: the newest seq
        ([("a", 101), ("a", 102), ("b", 7)], 20, {"a": 102}),
        ([("a", 1100), ("b", 1200), ("b", 1150)], 1000, {"a": 1100, "b": 1200}),
    ],
    ids=["kept", "batch-of-one", "not-a-multiple", "newest", "one-of-two", "two-channels"],
)
def test_due_trims(pairs, keep, due) -> None:
    assert store.due_trims(_events(*pairs), keep) == due
