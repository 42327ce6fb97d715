"""How many streams a process can hold open: derived from its file descriptor limit.

Each open stream is a socket. A process that runs out of descriptors fails every
request, /healthz included, so streams are refused (503) well before that, leaving
room for everything else a process needs a descriptor for.
"""

from __future__ import annotations

import logging
import sys

if sys.platform != "win32":  # elsewhere, no descriptor limit to read
    import resource

logger = logging.getLogger(__name__)

# Descriptors kept for what is not a stream: the listening sockets, database and Redis
# connections, log files, page and /healthz requests, connections still being read.
RESERVED_MIN = 64
RESERVED_FRACTION = 10  # one tenth of the limit, when that is more


def nofile_limits() -> tuple[int, int] | None:
    """(soft, hard) RLIMIT_NOFILE, or None where there is none to read."""
    if sys.platform == "win32":
        return None
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    return soft, hard


def raise_soft_limit() -> None:
    """Raise the soft descriptor limit to the hard one, where the system allows: the
    usual soft 1,024 would otherwise cap a process far below what it can serve."""
    limits = nofile_limits()
    if limits is None or sys.platform == "win32":
        return
    soft, hard = limits
    if hard == resource.RLIM_INFINITY or (soft != resource.RLIM_INFINITY and soft >= hard):
        return  # already as high as it goes (an unlimited soft value cannot be set on Linux)
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    except (ValueError, OSError) as exc:
        logger.debug("could not raise the descriptor limit from %d to %d: %r", soft, hard, exc)


def stream_capacity(soft: int) -> int | None:
    """Streams a process with this soft descriptor limit may hold; None: no limit."""
    if sys.platform != "win32" and soft == resource.RLIM_INFINITY:
        return None
    return max(1, soft - max(RESERVED_MIN, soft // RESERVED_FRACTION))


def process_stream_limit(setting: int | None) -> int | None:
    """EVENTS_MAX_STREAMS_PER_PROCESS when set, else what the descriptor limit allows."""
    if setting is not None:
        return setting
    limits = nofile_limits()
    return None if limits is None else stream_capacity(limits[0])
