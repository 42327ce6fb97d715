"""How one pass of the hub's receive loop groups the events it took from the layer.

Each channel's events go to its sequencer together, so that a stream gets them as one
chunk. Grouping by channel keeps each channel's order but not the order between
channels; a stream on several channels sees events in the order they arrived (its ids
say so: tests/test_consumers.py, the multi-channel stream), so while such a stream is
local a group ends where the events of two channels interleave.
"""

from __future__ import annotations

from collections.abc import Iterable

from events.messages import EventMessage


def by_channel(events: Iterable[EventMessage], keep_interleaving: bool) -> list[list[EventMessage]]:
    """The events in per-channel groups, to be handed on in the order returned: each
    channel's in arrival order; with `keep_interleaving`, also the order between
    channels (a group ends when its channel comes back after another one)."""
    groups: list[list[EventMessage]] = []
    current: dict[str, list[EventMessage]] = {}
    last = ""
    for event in events:
        name = event["channel"]
        group = current.get(name)
        if group is not None and keep_interleaving and name != last:
            current, group = {}, None
        if group is None:
            group = current[name] = []
            groups.append(group)
        group.append(event)
        last = name
    return groups
