"""What travels on the channel layer between publishers and the per-process hubs."""

from __future__ import annotations

from typing import NotRequired, TypedDict

GROUP_PREFIX = "events."
EVENT_MESSAGE = "events.event"
# A hub pings itself through the layer to notice a lost Redis (events/hub.py).
PING_MESSAGE = "events.ping"


class EventMessage(TypedDict):
    type: str  # EVENT_MESSAGE
    channel: str
    seq: int
    event: str
    data: str  # compact JSON, exactly as sent on the wire
    # Unix time of the broadcast after commit, for the hubs' delivery lag metric
    # (absent from messages of older publishers).
    committed_at: NotRequired[float]


def group_name(channel: str) -> str:
    # Channel names are at most 80 characters, so this stays under the layer's limit
    # of 100 for group names.
    return GROUP_PREFIX + channel
