"""How many streams a process takes on, in total and per client address.

Three limits, counted per process:
- streams being set up per client (EVENTS_MAX_PENDING_SETUPS_PER_CLIENT), from the
  request to live delivery, the replay included: one client must not queue unbounded
  work (queries, group joins, replays) ahead of everyone else's streams; a 429;
- open streams per client (EVENTS_MAX_STREAMS_PER_CLIENT): a 429;
- open streams in all (EVENTS_MAX_STREAMS_PER_PROCESS, else what the descriptor limit
  leaves room for: events/fdlimit.py): a 503, before the process runs out of sockets.
Each stream holds a Ticket, given back once whatever way the stream ends.
"""

from __future__ import annotations

import collections
import functools
import logging
import time

from events import fdlimit
from events.conf import conf
from events.rejection import Rejection

logger = logging.getLogger(__name__)

# Retry-After on a refusal for too many open streams: long enough for some to end.
STREAMS_FULL_RETRY_AFTER = 10
# What a client refused for too many set-ups at once is told to wait, in seconds.
SETUP_RETRY_AFTER_SECONDS = 1
FULL_WARNING_EVERY_SECONDS = 60.0


class ClientCounts:
    """What is held, per client address and in all."""

    def __init__(self) -> None:
        self.total = 0
        self._by_client: collections.Counter[str] = collections.Counter()

    def held_by(self, client: str) -> int:
        return self._by_client[client]

    def add(self, client: str | None) -> None:
        self.total += 1
        if client is not None:
            self._by_client[client] += 1

    def remove(self, client: str | None) -> None:
        self.total -= 1
        if client is not None:
            self._by_client[client] -= 1
            if self._by_client[client] <= 0:
                del self._by_client[client]  # a process sees many addresses: keep none idle


setting_up = ClientCounts()
open_streams = ClientCounts()


@functools.cache
def _descriptor_capacity() -> int | None:
    # Read once: the descriptor limit is raised when the app starts (events/apps.py)
    # and does not change afterwards.
    return fdlimit.process_stream_limit(None)


def process_limit() -> int | None:
    setting = conf.max_streams_per_process
    return setting if setting is not None else _descriptor_capacity()


_full_warned_at = -FULL_WARNING_EVERY_SECONDS


def _warn_full(limit: int) -> None:
    # Once a minute at most: a client hammering a full process must not flood the log.
    global _full_warned_at
    now = time.monotonic()
    if now - _full_warned_at >= FULL_WARNING_EVERY_SECONDS:
        _full_warned_at = now
        logger.warning(
            "refusing streams: %d open, the most this process's descriptors allow "
            "(raise `ulimit -n`, or set EVENTS_MAX_STREAMS_PER_PROCESS)",
            limit,
        )


class Ticket:
    """One stream's place in the counts. Each step is given back at most once."""

    __slots__ = ("client", "_setting_up", "_open", "_open_client")

    def __init__(self, client: str | None) -> None:
        self.client = client
        self._setting_up: str | None = None
        self._open = False
        self._open_client: str | None = None

    def begin_setup(self) -> None:
        limit = conf.max_pending_setups_per_client
        if not limit or self.client is None:
            return
        if setting_up.held_by(self.client) >= limit:
            raise Rejection(
                429,
                f"too many streams being set up at once from {self.client} (at most {limit}); retry shortly",
                retry_after=SETUP_RETRY_AFTER_SECONDS,
            )
        setting_up.add(self.client)
        self._setting_up = self.client

    def end_setup(self) -> None:
        if self._setting_up is not None:
            setting_up.remove(self._setting_up)
            self._setting_up = None

    def admit(self) -> None:
        """Count an open stream, or refuse it: 503 when the process holds all the
        streams it may, 429 when this client address holds its share."""
        limit = process_limit()
        if limit is not None and open_streams.total >= limit:
            _warn_full(limit)
            raise Rejection(
                503, "this server holds all the streams it can; try again later", STREAMS_FULL_RETRY_AFTER
            )
        share = conf.max_streams_per_client
        client = self.client if share else None
        if client is not None and open_streams.held_by(client) >= share:
            raise Rejection(
                429, f"too many open streams from {client} (at most {share})", STREAMS_FULL_RETRY_AFTER
            )
        open_streams.add(client)
        self._open, self._open_client = True, client

    def release(self) -> None:
        self.end_setup()
        if self._open:
            self._open = False
            open_streams.remove(self._open_client)
