"""The hub's group memberships on the channel layer.

One layer channel per hub joins the group of each SSE channel that has local streams.
Joins and leaves of one channel reach the layer in the order they happened (a leave
and a quick re-join must not swap); different channels never wait for each other.
Leaves run one at a time from a queue of their own, so that a stream ended inside the
fan-out never waits for Redis, and a client dropping many streams does not get ahead of
every other stream's joins (the layer orders its calls in one queue).

Memberships of channels whose streams were ended because the layer was lost are left
alone until it is back: leaving while Redis is down fails half-way and leaves the layer
believing it is still subscribed, while memberships left alone are restored by the
Redis client when it reconnects. Once the layer answers again they are discarded.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable, Container, Iterable

from events.messages import ChannelLayer, group_name

logger = logging.getLogger(__name__)

# No layer call may hang a stream's set-up or clean-up for longer than this (while
# Redis is unreachable the client library can otherwise retry for a long time).
LAYER_TIMEOUT_SECONDS = 5.0


class _Turn:
    """A channel's ordering lock, and how many calls hold or await it."""

    __slots__ = ("lock", "users")

    def __init__(self) -> None:
        self.lock = asyncio.Lock()
        self.users = 0


class Membership:
    def __init__(self, layer: ChannelLayer, wanted: Container[str]) -> None:
        self.layer = layer
        # The channels that have local streams (the hub's): a leave of one of them, or
        # its orphaned membership, is kept.
        self.wanted = wanted
        self.channel_name = ""
        self._turns: dict[str, _Turn] = {}
        self._to_leave: dict[str, None] = {}
        self._leaver: asyncio.Task[None] | None = None
        self.orphans: set[str] = set()

    async def open(self) -> str:
        self.channel_name = await self.layer.new_channel("events.hub.")
        return self.channel_name

    async def add(self, group: str) -> None:
        await asyncio.wait_for(self.layer.group_add(group, self.channel_name), LAYER_TIMEOUT_SECONDS)

    async def discard(self, group: str) -> None:
        await asyncio.wait_for(self.layer.group_discard(group, self.channel_name), LAYER_TIMEOUT_SECONDS)

    @contextlib.asynccontextmanager
    async def _turn(self, channel: str) -> AsyncIterator[None]:
        turn = self._turns.get(channel)
        if turn is None:
            turn = self._turns[channel] = _Turn()
        turn.users += 1
        try:
            async with turn.lock:
                yield
        finally:
            turn.users -= 1
            if not turn.users:
                del self._turns[channel]

    async def join(self, channel: str, still_wanted: Callable[[], bool]) -> bool:
        """Join the channel's group, unless it is no longer wanted once its turn comes
        (every stream of it ended meanwhile: no layer call for nobody)."""
        async with self._turn(channel):
            if not still_wanted():
                return False
            await self.add(group_name(channel))
            return True

    def leave(self, channel: str) -> None:
        """Leave the channel's group soon (unless it is wanted again by then)."""
        self._to_leave[channel] = None
        if self._leaver is None:
            self._leaver = asyncio.create_task(self._leave_queued(), name="events-hub-leave")

    async def _leave_queued(self) -> None:
        try:
            while self._to_leave:
                channel = next(iter(self._to_leave))
                del self._to_leave[channel]
                try:
                    await self._discard_unwanted(channel)
                except Exception as exc:
                    # Redis is down: the liveness ping ends everything, and the
                    # subscription is gone with the connection anyway.
                    logger.warning("leaving the group of %r failed: %r", channel, exc)
        finally:
            self._leaver = None

    async def _discard_unwanted(self, channel: str) -> None:
        async with self._turn(channel):
            if channel not in self.wanted:
                await self.discard(group_name(channel))

    def orphan(self, channels: Iterable[str]) -> None:
        """The layer is lost: these channels' memberships are left once it is back."""
        self.orphans.update(channels)

    async def discard_orphans(self) -> None:
        """The layer is back: leave the orphaned groups (what fails is tried next time)."""
        for channel in list(self.orphans):
            try:
                await self._discard_unwanted(channel)
            except Exception:
                return
            self.orphans.discard(channel)

    async def aclose(self, groups: Iterable[str]) -> None:
        """Let the queued leaves finish (bounded), then leave `groups`."""
        if self._leaver is not None:
            await asyncio.wait([self._leaver], timeout=LAYER_TIMEOUT_SECONDS)
        if self.channel_name:
            for group in groups:
                await self.discard(group)
