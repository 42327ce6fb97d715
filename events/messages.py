"""What travels on the channel layer between publishers and the per-process hubs, and
the layer calls the hub makes (channels' layers come without types)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, NotRequired, Protocol, TypedDict, TypeGuard

GROUP_PREFIX = "events."
EVENT_MESSAGE = "events.event"
# A hub pings itself through the layer to notice a lost Redis (events/liveness.py).
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


class ChannelLayer(Protocol):
    """What the hub calls on channels-redis' layer."""

    async def new_channel(self, prefix: str = ...) -> str: ...

    async def send(self, channel: str, message: dict[str, Any]) -> None: ...

    async def receive(self, channel: str) -> dict[str, Any]: ...

    async def group_add(self, group: str, channel: str) -> None: ...

    async def group_discard(self, group: str, channel: str) -> None: ...


def is_event(message: Mapping[str, Any]) -> TypeGuard[EventMessage]:
    """An event message with every field the hub reads, of the right type.

    Any process may send on the layer (another version of this product, say): a message
    of the event type that lacks a field must be dropped, not end the receive loop."""
    return (
        message.get("type") == EVENT_MESSAGE
        and isinstance(message.get("channel"), str)
        and type(message.get("seq")) is int
        and isinstance(message.get("event"), str)
        and isinstance(message.get("data"), str)
    )


def group_name(channel: str) -> str:
    # Channel names are at most 80 characters, so this stays under the layer's limit
    # of 100 for group names.
    return GROUP_PREFIX + channel
