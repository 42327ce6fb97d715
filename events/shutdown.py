"""A stream's end when the server shuts down.

daphne cancels every application at shutdown (SIGTERM) and drops every connection right
after, discarding unsent bytes. The connection is still open when the stream sees the
cancellation: it ends the response with a `retry:` spread at random, so that thousands
of browsers do not all come back in the same millisecond, and waits a little for those
last bytes to leave.
"""

from __future__ import annotations

import logging
import random
from typing import Protocol

from events import metrics, sse
from events.conf import conf
from events.transport import Transport

logger = logging.getLogger(__name__)

# How long a stream waits at most for its last frame to leave.
DRAIN_SECONDS = 2.0


class Closable(Protocol):
    async def close_stream(
        self, abort: bool = False, final: bytes = b"", reason: metrics.CloseReason = "error"
    ) -> None: ...


async def end_stream(stream: Closable, transport: Transport) -> None:
    try:
        # Spread at random (EVENTS_SHUTDOWN_RETRY_SPREAD_MS): thousands of clients of one
        # process must not all come back in the same millisecond.
        retry = conf.retry_ms + random.randint(0, max(0, conf.shutdown_retry_spread_ms))
        await stream.close_stream(final=sse.format_retry(retry), reason="shutdown")
        await transport.drain(DRAIN_SECONDS)
    except Exception:
        logger.debug("could not end a stream at shutdown", exc_info=True)
