"""The hub's regular work besides the liveness ping, each run as a task of its own:
heartbeats to idle streams, and reconciliation of every channel with the store."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Collection, Mapping

from events import metrics
from events.conf import conf
from events.fanout import LocalChannel, Stream
from events.log import describe
from events.sequencer import StoreReader, reconcile

logger = logging.getLogger(__name__)


async def heartbeats(streams: Collection[Stream]) -> None:
    loop = asyncio.get_running_loop()
    while True:
        # Ticks at a quarter of the interval; a stream idle for half of it gets a
        # comment. So the longest idle gap is three quarters of the interval, with a
        # quarter to spare for a busy event loop.
        interval = conf.heartbeat_seconds
        await asyncio.sleep(interval / 4)
        # The bytes the streams tallied (events, heartbeats, replays) reach the
        # counters here, not once per event.
        metrics.flush()
        now = loop.time()
        for stream in list(streams):
            if now - stream.last_write >= interval / 2:
                try:
                    await stream.heartbeat()
                except Exception:
                    logger.exception("heartbeat to a stream failed")


async def reconciliation(
    store: StoreReader, channels: Mapping[str, LocalChannel], pinged: asyncio.Event
) -> None:
    """Catch every channel up with the store after each liveness ping that came back
    (`pinged`; while the layer is lost there are no streams to catch up). A failing
    store is logged once, and its return once: while the database is down, open
    streams keep their live events."""
    failing = False
    while True:
        await pinged.wait()
        pinged.clear()
        try:
            await reconcile(store, [channel.sequencer for channel in channels.values()])
        except Exception as exc:
            if not failing:
                failing = True
                logger.error("catching up channels from the store failed (%s); will retry", describe(exc))
            continue
        if failing:
            failing = False
            logger.warning("the store answers again; channels caught up")
