"""The hub's receive loop: messages from the layer, a pass at a time, to the sequencers.

A pass is one `receive()` and whatever else is already queued for the hub's layer
channel (events/layer_backlog.py), so that a burst, or a backlog behind a busy event
loop, reaches each stream as one chunk. Any message proves the layer alive (the
liveness probes waiting are answered once a pass). Events are grouped by channel
(events/batching.py) and each group goes to its channel's sequencer; a logout is
handled where it came, after the events before it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from typing import Any

from events import reauth
from events.batching import by_channel
from events.conf import conf
from events.fanout import LocalChannel, Stream
from events.layer_backlog import take_queued
from events.log import log_failure
from events.messages import EVENT_MESSAGE, ChannelLayer, EventMessage, is_event

logger = logging.getLogger(__name__)

# Layer messages handled in one pass at most.
MESSAGES_PER_PASS = 1000


class Receiver:
    __slots__ = ("layer", "channels", "spanning", "arrivals")

    def __init__(
        self,
        layer: ChannelLayer,
        channels: Mapping[str, LocalChannel],
        spanning: set[Stream],
        arrivals: set[asyncio.Future[None]],
    ) -> None:
        self.layer = layer
        # The hub's, shared: its local channels, its streams on several channels, and
        # the liveness probes waiting for any message.
        self.channels = channels
        self.spanning = spanning
        self.arrivals = arrivals

    async def run(self, channel_name: str) -> None:
        layer, receive, arrivals = self.layer, self.layer.receive, self.arrivals
        while True:
            messages = [await receive(channel_name)]
            # Bounded so that one pass stays a fraction of a stream's slow-reader bound
            # (which counts only the bytes queued before a write:
            # consumers.EventStreamConsumer.write).
            messages += take_queued(layer, channel_name, MESSAGES_PER_PASS, conf.max_queued_bytes // 4)
            # Behind a long backlog of events the ping itself may take longer than its
            # timeout: any message counts.
            for arrival in arrivals:
                if not arrival.done():
                    arrival.set_result(None)
            # Let the event loop run between two passes: a backlog taken from the
            # layer's queue would otherwise be fanned out without Twisted ever
            # flushing a socket in between (and slow-reader limits would trip).
            await asyncio.sleep(0)
            await self.hand_on(messages)

    async def hand_on(self, messages: list[Any]) -> None:
        """One pass: the events between two logouts (or the ends of the pass) grouped
        by channel, each group to its sequencer at once; a logout where it came. Any
        process may send on the layer: what is not a well-formed message is dropped."""
        events: list[EventMessage] = []
        for message in messages:
            if not isinstance(message, dict):
                logger.warning("dropped a message from the channel layer that is not a dict: %.200r", message)
            elif is_event(message):
                events.append(message)
            elif message.get("type") == reauth.LOGOUT_MESSAGE:
                if events:
                    await self._hand_on_events(events)
                    events = []
                reauth.logged_out(message.get("session"))
            elif message.get("type") == EVENT_MESSAGE:
                logger.warning("dropped a malformed event message from the channel layer: %.200r", message)
        if events:
            await self._hand_on_events(events)

    async def _hand_on_events(self, events: list[EventMessage]) -> None:
        channels = self.channels
        for group in by_channel(events, keep_interleaving=bool(self.spanning)):
            channel = channels.get(group[0]["channel"])
            if channel is None:
                continue
            try:
                await channel.sequencer.receive_many(group)
            except Exception as exc:  # a gap to fill while the store is down, say
                log_failure(logger, exc, "delivering %s:%s failed", channel.name, group[-1]["seq"])
