"""Whether live events reach this process: a ping through the hub's own subscription.

The pub/sub layer hides a Redis outage (it logs and retries inside its own task), and
messages published meanwhile are gone. A fresh connection to Redis can work while the
subscription the hub listens on is still being re-established; only a round trip
through it shows that live events arrive. So the hub pings itself; when nothing comes
back, every local stream is ended (clients reconnect and resume from the store once
Redis answers again) and the channels' positions go with them, so that the next
streams join afresh. While lost, the layer is probed often, so that its return is
noticed (and said) quickly; the loss and the return are logged once each.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from events import metrics
from events.conf import conf
from events.log import describe
from events.membership import Membership
from events.messages import PING_MESSAGE

logger = logging.getLogger(__name__)

# How long a ping through the layer may take before the hub calls the layer lost.
PING_TIMEOUT_SECONDS = 5.0
# Longest gap between pings; shorter when the heartbeat is shorter.
PING_INTERVAL_SECONDS = 5.0
# A ping published while the subscription is being re-established (a Redis restart) is
# dropped by pub/sub: a probe sends another this often until something arrives.
PING_RESEND_SECONDS = 0.25
# Once the layer is lost, it is probed this often.
LOST_PROBE_SECONDS = 0.25


class Liveness:
    def __init__(self, membership: Membership, drop_all: Callable[[], Awaitable[None]]) -> None:
        self.membership = membership
        self._drop_all = drop_all
        # Since when the layer is lost (loop time), or None while it works.
        self.lost_since: float | None = None
        # Probes waiting for a message to come in (the receive loop resolves them).
        self.arrivals: set[asyncio.Future[None]] = set()
        # Set by each ping that came back: the reconciliation with the store follows
        # (events/upkeep.py), so it covers whatever the layer dropped before the ping.
        self.pinged = asyncio.Event()

    async def probe(self, timeout: float) -> None:
        """Return once a message has come in through the hub's subscription after the
        call; raise (TimeoutError, or the layer's error) if none does in time."""
        layer, channel_name = self.membership.layer, self.membership.channel_name
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        arrival: asyncio.Future[None] = loop.create_future()
        self.arrivals.add(arrival)
        try:
            while True:
                remaining = deadline - loop.time()
                if remaining <= 0:
                    raise TimeoutError(f"nothing came back through the channel layer within {timeout:g} s")
                await asyncio.wait_for(layer.send(channel_name, {"type": PING_MESSAGE}), remaining)
                done, _ = await asyncio.wait([arrival], timeout=min(PING_RESEND_SECONDS, remaining))
                if done:
                    return
        finally:
            self.arrivals.discard(arrival)

    async def run(self, streams: Callable[[], int]) -> None:
        """Ping at every interval; `streams` counts the local streams (for the log)."""
        loop = asyncio.get_running_loop()
        while True:
            interval = min(PING_INTERVAL_SECONDS, conf.heartbeat_seconds)
            await asyncio.sleep(interval if self.lost_since is None else LOST_PROBE_SECONDS)
            try:
                await self.probe(PING_TIMEOUT_SECONDS)
            except Exception as exc:
                lost_now = self.lost_since is None
                if lost_now:
                    self.lost_since = loop.time()
                    logger.error("channel layer lost (%s); ending %d local streams", describe(exc), streams())
                metrics.layer_state(up=False, lost_now=lost_now)
                # Also streams opened while it is lost: they may be deaf.
                await self._drop_all()
                continue
            if self.lost_since is not None:
                logger.warning("channel layer back after %.1f s", loop.time() - self.lost_since)
                self.lost_since = None
                metrics.layer_state(up=True)
            self.pinged.set()
            if self.membership.orphans:
                await self.membership.discard_orphans()
