"""How a pass of the hub's receive loop groups its events (events/batching.py)."""

from __future__ import annotations

from events.batching import by_channel
from events.messages import EVENT_MESSAGE


def event(channel: str, seq: int) -> dict:
    return {"type": EVENT_MESSAGE, "channel": channel, "seq": seq, "event": "message", "data": "1"}


def shape(groups) -> list[list[str]]:
    return [[f"{e['channel']}{e['seq']}" for e in group] for group in groups]


def test_each_channels_events_form_one_group_in_arrival_order() -> None:
    events = [event("a", 1), event("b", 1), event("a", 2), event("c", 1), event("b", 2)]
    assert shape(by_channel(events, keep_interleaving=False)) == [["a1", "a2"], ["b1", "b2"], ["c1"]]


def test_the_order_between_channels_is_kept_where_they_interleave() -> None:
    events = [event("a", 1), event("a", 2), event("b", 1), event("a", 3), event("b", 2), event("b", 3)]
    groups = by_channel(events, keep_interleaving=True)
    assert shape(groups) == [["a1", "a2"], ["b1"], ["a3"], ["b2", "b3"]]
    # Handed on group after group, the events come in exactly their arrival order.
    assert [e for group in groups for e in group] == events


def test_channels_that_do_not_interleave_stay_one_group_each() -> None:
    events = [event("a", 1), event("a", 2), event("b", 1), event("b", 2)]
    assert shape(by_channel(events, keep_interleaving=True)) == [["a1", "a2"], ["b1", "b2"]]
    assert by_channel([], keep_interleaving=True) == []
