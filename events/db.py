"""Where streams do their database work: a few threads of their own.

channels' database_sync_to_async (like asgiref's sync_to_async) runs every call on one
thread per process by default, the thread Django's views run on too. A flood of stream
set-ups and replays queued there for seconds, and every other stream's start, and every
page of the site, waited behind it. Stream queries are short reads that need no thread
affinity, so they run here instead, a few at a time.

Each worker thread has its own Django connection; DatabaseSyncToAsync closes it after
every call when CONN_MAX_AGE says so (close_old_connections), as a request would.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from channels.db import DatabaseSyncToAsync

# Enough for set-up reads to overtake a busy replay; few enough that a flood does not
# open more than this many database connections per process.
STREAM_DB_THREADS = 4

_executor = ThreadPoolExecutor(max_workers=STREAM_DB_THREADS, thread_name_prefix="events-db")


def stream_db(func: Callable[..., Any]) -> Callable[..., Any]:
    """`func` as a coroutine function that runs on the streams' database threads."""
    wrapped: Callable[..., Any] = DatabaseSyncToAsync(func, thread_sensitive=False, executor=_executor)
    return wrapped
