"""The event store (events/store.py) against the real test database."""

from __future__ import annotations

import uuid

import pytest
from django.db import transaction

from events import store
from events.models import Channel, Event

pytestmark = pytest.mark.django_db


def channel() -> str:
    return f"test-{uuid.uuid4().hex[:12]}"


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


def test_first_seqs_are_the_oldest_retained() -> None:
    a, b, unknown = channel(), channel(), channel()
    for _ in range(5):
        store.append(a, "t", "1")
    store.append(b, "t", "1")
    assert store.first_seqs([a, b, unknown]) == {a: 1, b: 1}
    store.trim(a, 2)
    # A channel without stored events has no first seq at all.
    assert store.first_seqs([a, b, unknown]) == {a: 4, b: 1}


def test_between_spans_channels_in_id_order() -> None:
    a, b = channel(), channel()
    a1 = store.append(a, "t", "a1")
    b1 = store.append(b, "t", "b1")
    a2 = store.append(a, "t", "a2")
    b2 = store.append(b, "t", "b2")
    a3 = store.append(a, "t", "a3")
    assert store.between({a: (0, 3), b: (0, 2)}) == [a1, b1, a2, b2, a3]
    # after < seq <= upto on each channel, merged in publication (id) order.
    assert store.between({a: (1, 3), b: (0, 1)}) == [b1, a2, a3]
    assert store.between({a: (1, 2), b: (1, 2)}) == [a2, b2]


@pytest.mark.parametrize(
    "ranges",
    [{}, {"A": (3, 3)}, {"A": (3, 1)}, {"A": (3, 3), "B": (2, 2)}, {"unknown": (0, 10)}],
    ids=["no-channels", "empty-range", "inverted-range", "all-empty", "unknown-channel"],
)
def test_between_empty(ranges: dict[str, tuple[int, int]]) -> None:
    a, b = channel(), channel()
    for _ in range(3):
        store.append(a, "t", "1")
        store.append(b, "t", "1")
    names = {"A": a, "B": b, "unknown": channel()}
    assert store.between({names[key]: span for key, span in ranges.items()}) == []


def test_between_skips_empty_ranges_among_others() -> None:
    a, b = channel(), channel()
    store.append(a, "t", "a1")
    b1 = store.append(b, "t", "b1")
    assert store.between({a: (1, 1), b: (0, 1)}) == [b1]


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
