"""EVENTS_* settings: defaults and typed accessors.

Each property reads django.conf.settings on every use, so that override_settings in
tests and settings changed at run time are seen; the values are validated once by the
system checks in events/checks.py.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from django.conf import settings

DEFAULTS: dict[str, Any] = {
    "EVENTS_HEARTBEAT_SECONDS": 15.0,
    "EVENTS_RETRY_MS": 3000,
    # At shutdown, streams are told to come back after EVENTS_RETRY_MS plus up to this
    # much, at random (events/shutdown.py): a restart's clients do not all return at once.
    "EVENTS_SHUTDOWN_RETRY_SPREAD_MS": 10_000,
    "EVENTS_HISTORY_PER_CHANNEL": 1000,
    "EVENTS_MAX_CHANNELS_PER_STREAM": 10,
    "EVENTS_MAX_PAYLOAD_BYTES": 64 * 1024,
    "EVENTS_CHANNEL_POLICY": "events.policy.default_policy",
    "EVENTS_PUBLISH_POLICY": "events.policy.default_publish_policy",
    # Streams a session authorised are checked again this often (and at once when the
    # session logs out): a logged-out, deactivated or demoted user stops reading.
    "EVENTS_REAUTH_SECONDS": 60.0,
    "EVENTS_ALLOWED_ORIGINS": [],
    # Origins whose pages may send this site's cookies (CORS with credentials).
    "EVENTS_CREDENTIALED_ORIGINS": [],
    "EVENTS_PUBLISH_TOKEN": "",
    # A bearer token that may read GET /metrics (staff sessions always may); "" is none.
    "EVENTS_METRICS_TOKEN": "",
    # Bytes a stream may have waiting for a client that does not read; past this the
    # connection is ended and the client resumes from its last id.
    "EVENTS_MAX_QUEUED_BYTES": 256 * 1024,
    # Open streams one client address may hold in one process; 0 turns the limit off.
    "EVENTS_MAX_STREAMS_PER_CLIENT": 100,
    # Open streams one process may hold; None: what its descriptor limit leaves room
    # for (events/fdlimit.py). Past it streams are answered 503 with Retry-After.
    "EVENTS_MAX_STREAMS_PER_PROCESS": None,
    # Seconds a process's subscriber counts outlive its last refresh in Redis
    # (events/presence.py): a killed process's counts vanish within this time.
    "EVENTS_PRESENCE_TTL_SECONDS": 15.0,
    # A unix socket path where `manage.py serve` starts a redis-server for development
    # (events/embedded_redis.py); the channel layer points at unix://<path>. "" is none.
    "EVENTS_EMBEDDED_REDIS": "",
    # Bytes of stored events all replays of one process may hold at once: read from the
    # store and not yet taken by their clients (events/replay.py).
    "EVENTS_REPLAY_BUDGET_BYTES": 16 * 1024 * 1024,
    # A replaying client that takes less than this while the server waits for it is
    # ended; it resumes from its last id later.
    "EVENTS_REPLAY_MIN_BYTES_PER_SECOND": 16 * 1024,
    # Streams one client address may have being set up at once (request to live
    # delivery, replay included) in one process; 0 turns the limit off.
    "EVENTS_MAX_PENDING_SETUPS_PER_CLIENT": 10,
    # Events one POST /events/ may carry (stored in one transaction).
    "EVENTS_MAX_BATCH": 1000,
}


def get(name: str) -> Any:
    return getattr(settings, name, DEFAULTS[name])


class Settings:
    @property
    def heartbeat_seconds(self) -> float:
        return float(get("EVENTS_HEARTBEAT_SECONDS"))

    @property
    def retry_ms(self) -> int:
        return int(get("EVENTS_RETRY_MS"))

    @property
    def shutdown_retry_spread_ms(self) -> int:
        return int(get("EVENTS_SHUTDOWN_RETRY_SPREAD_MS"))

    @property
    def history_per_channel(self) -> int:
        return int(get("EVENTS_HISTORY_PER_CHANNEL"))

    @property
    def max_channels_per_stream(self) -> int:
        return int(get("EVENTS_MAX_CHANNELS_PER_STREAM"))

    @property
    def max_payload_bytes(self) -> int:
        return int(get("EVENTS_MAX_PAYLOAD_BYTES"))

    @property
    def channel_policy(self) -> str:
        return str(get("EVENTS_CHANNEL_POLICY"))

    @property
    def publish_policy(self) -> str:
        return str(get("EVENTS_PUBLISH_POLICY"))

    @property
    def reauth_seconds(self) -> float:
        return float(get("EVENTS_REAUTH_SECONDS"))

    @property
    def allowed_origins(self) -> list[str]:
        return list(get("EVENTS_ALLOWED_ORIGINS"))

    @property
    def credentialed_origins(self) -> list[str]:
        return list(get("EVENTS_CREDENTIALED_ORIGINS"))

    @property
    def max_queued_bytes(self) -> int:
        return int(get("EVENTS_MAX_QUEUED_BYTES"))

    @property
    def max_streams_per_client(self) -> int:
        return int(get("EVENTS_MAX_STREAMS_PER_CLIENT"))

    @property
    def max_streams_per_process(self) -> int | None:
        value = get("EVENTS_MAX_STREAMS_PER_PROCESS")
        return None if value is None else int(value)

    @property
    def publish_token(self) -> str:
        return str(get("EVENTS_PUBLISH_TOKEN") or "")

    @property
    def metrics_token(self) -> str:
        return str(get("EVENTS_METRICS_TOKEN") or "")

    @property
    def presence_ttl_seconds(self) -> float:
        return float(get("EVENTS_PRESENCE_TTL_SECONDS"))

    @property
    def embedded_redis(self) -> Path | None:
        value = get("EVENTS_EMBEDDED_REDIS")
        return Path(value) if value else None

    @property
    def replay_budget_bytes(self) -> int:
        return int(get("EVENTS_REPLAY_BUDGET_BYTES"))

    @property
    def max_pending_setups_per_client(self) -> int:
        return int(get("EVENTS_MAX_PENDING_SETUPS_PER_CLIENT"))

    @property
    def replay_min_bytes_per_second(self) -> int:
        return int(get("EVENTS_REPLAY_MIN_BYTES_PER_SECOND"))

    @property
    def max_batch(self) -> int:
        return int(get("EVENTS_MAX_BATCH"))


conf = Settings()
