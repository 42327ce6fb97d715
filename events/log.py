"""Logging helpers for the project's LOGGING setting."""

from __future__ import annotations

import logging

import redis.exceptions


class OneLineFormatter(logging.Formatter):
    """The message without its traceback: for expected rejections that Django logs with
    exc_info (a request with a Host outside ALLOWED_HOSTS is answered 400; its stack
    says nothing an operator needs, and scanners send thousands of them)."""

    def format(self, record: logging.LogRecord) -> str:
        record = logging.makeLogRecord({**record.__dict__, "exc_info": None, "exc_text": None})
        return super().format(record)


# What a Redis client raises when it cannot reach the server.
UNREACHABLE = (OSError, TimeoutError, redis.exceptions.ConnectionError, redis.exceptions.TimeoutError)


class LayerReconnectFilter(logging.Filter):
    """Drops channels-redis' traceback for each failed attempt of its pub/sub connection
    to reconnect (about one a second while Redis is down): the hub logs once that the
    channel layer is lost and once that it is back (events/liveness.py). Other errors pass."""

    def filter(self, record: logging.LogRecord) -> bool:
        error = record.exc_info[1] if record.exc_info else None
        return not isinstance(error, UNREACHABLE)


def describe(error: BaseException) -> str:
    """An error in one line: its type and the first line of its message."""
    text = str(error).strip()
    return f"{type(error).__name__}: {text.splitlines()[0]}" if text else type(error).__name__


def outage(error: BaseException) -> BaseException | None:
    """The database or Redis error behind `error` (itself, or what it was raised from),
    or None: an outage is logged in one line, a bug with its traceback."""
    from django.db import Error as DatabaseError

    seen: BaseException | None = error
    while seen is not None:
        if isinstance(seen, (DatabaseError, *UNREACHABLE)):
            return seen
        seen = seen.__cause__ or seen.__context__
    return None


def log_failure(logger: logging.Logger, error: BaseException, message: str, *args: object) -> None:
    """Log `message % args` for a failure: in one warning line naming the cause when the
    database or Redis is out (an outage is expected and says enough), with the whole
    traceback at error level otherwise (a bug)."""
    cause = outage(error)
    if cause is not None:
        logger.warning(message + " (%s)", *args, describe(cause))
    else:
        logger.error(message, *args, exc_info=error)
