"""Live subscriber counts: open streams per channel, across every daphne process.

Each hub (one per daphne process, see events/hub.py) owns one Redis hash,
`<prefix>:presence:<uuid>`, mapping channel -> number of its open streams. The hub
rewrites the hash whenever its streams change (bursts coalesced) and at least every
third of EVENTS_PRESENCE_TTL_SECONDS, each time with that TTL. A process that dies
stops refreshing, so its counts vanish within the TTL; a hub that is closed (close_hub())
deletes its hash at once. daphne does not close it at shutdown, so there too the counts
go with the TTL. Readers SCAN the hashes and add them up.

Intentional divergence from INCR/DECR on one shared hash: a process killed with streams
open would leave its increments behind for ever, while per-process hashes that expire
need no clean-up by anyone.

The writer runs in its own task of the hub; a Redis failure here is logged and retried
and never touches delivery.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import Mapping
from typing import Any, Protocol, TypedDict

import redis
import redis.asyncio
from redis.typing import EncodableT, FieldT

from events import redis_clients
from events.conf import conf

logger = logging.getLogger(__name__)

KEY_INFIX = ":presence:"
# After a write, changes are gathered for this long before the next one, so that a
# burst of connects (a deploy, a reconnect storm) costs a few writes, not thousands.
COALESCE_SECONDS = 0.1
# No Redis call here may take longer than this (an unreachable Redis otherwise retries).
REDIS_TIMEOUT_SECONDS = redis_clients.TIMEOUT_SECONDS


class PresenceUnavailable(Exception):
    """The counts cannot be read: no Redis channel layer, or Redis does not answer."""


class Presence(TypedDict):
    channels: dict[str, int]  # channel -> open streams, all processes together
    processes: int  # processes (hubs) that have open streams


class _Hub(Protocol):
    @property
    def channels(self) -> Mapping[str, Any]: ...  # channel -> its local streams, as `.subscribers`


def redis_host() -> dict[str, Any] | None:
    """The Redis the counts live in: the channel layer's (its first, with several shards),
    connected with the layer's own settings (events/redis_clients.py)."""
    hosts = redis_clients.layer_hosts()
    return hosts[0] if hosts else None


def key_prefix() -> str:
    return f"{redis_clients.layer_config().get('prefix', 'asgi')}{KEY_INFIX}"


def _glob_escape(text: str) -> str:
    # SCAN MATCH is a glob: a prefix with * ? [ ] must match only itself.
    return "".join(f"\\{char}" if char in "*?[]\\" else char for char in text)


class PresenceWriter:
    """Keeps one hub's counts in Redis (runs as a task of the hub)."""

    def __init__(self, hub: _Hub) -> None:
        self.hub = hub
        self.id = uuid.uuid4().hex
        self._changed = asyncio.Event()
        self._client: redis.asyncio.Redis | None = None
        self._key: str | None = None
        self._failing = False

    @property
    def key(self) -> str:
        if self._key is None:
            self._key = key_prefix() + self.id
        return self._key

    def counts(self) -> dict[str, int]:
        channels = self.hub.channels.items()
        return {name: len(state.subscribers) for name, state in channels if state.subscribers}

    def changed(self) -> None:
        """The hub's streams changed: write soon."""
        self._changed.set()

    def _redis(self) -> redis.asyncio.Redis | None:
        if self._client is None:
            host = redis_host()
            if host is None:
                return None
            self._client = redis_clients.async_client(host)
        return self._client

    async def run(self) -> None:
        while True:
            # Woken by a change, or after a third of the TTL to refresh it. asyncio.timeout,
            # not wait_for: on 3.11 wait_for swallows a cancel that arrives as the event is
            # set, and the hub's aclose() would then wait for this task for ever.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(conf.presence_ttl_seconds / 3):
                    await self._changed.wait()
            self._changed.clear()
            try:
                await self.write()
            except Exception as exc:
                if not self._failing:  # once per outage, not every few seconds
                    logger.warning("writing subscriber counts to Redis failed: %r", exc)
                self._failing = True
            else:
                self._failing = False
            task = asyncio.current_task()
            if task is not None and task.cancelling():
                # A cancel the Redis client turned into an error (caught above) is still
                # a cancel: the hub's aclose() would otherwise wait out its timeout.
                raise asyncio.CancelledError
            await asyncio.sleep(COALESCE_SECONDS)

    async def write(self) -> None:
        client = self._redis()
        if client is None:
            return
        counts = self.counts()
        ttl_ms = max(1, round(conf.presence_ttl_seconds * 1000))
        # One transaction: readers never see the hash half-written or without a TTL.
        async with client.pipeline(transaction=True) as pipe:
            pipe.delete(self.key)
            if counts:
                # redis-py's field types are wider than (and invariant over) str -> int.
                mapping: dict[FieldT, EncodableT] = dict(counts.items())
                pipe.hset(self.key, mapping=mapping)
                pipe.pexpire(self.key, ttl_ms)
            async with asyncio.timeout(REDIS_TIMEOUT_SECONDS):
                await pipe.execute()

    async def aclose(self) -> None:
        """Remove this hub's counts now (a clean stop), and close the connection."""
        client, self._client = self._client, None
        if client is None:
            return
        try:
            async with asyncio.timeout(REDIS_TIMEOUT_SECONDS):
                await client.delete(self.key)
        except Exception as exc:
            logger.info("removing subscriber counts failed (they expire anyway): %r", exc)
        finally:
            with contextlib.suppress(Exception):
                async with asyncio.timeout(REDIS_TIMEOUT_SECONDS):
                    await redis_clients.aclose(client)


def counts() -> Presence:
    """Open streams per channel, summed over every live process (sync)."""
    host = redis_host()
    if host is None:
        raise PresenceUnavailable("subscriber counts need a Redis channel layer (CHANNEL_LAYERS hosts)")
    try:
        client = redis_clients.sync_client(host)
    except (redis.RedisError, ValueError, TypeError) as exc:
        raise PresenceUnavailable(f"the channel layer's Redis settings are unusable: {exc}") from exc
    try:
        keys = list(client.scan_iter(match=_glob_escape(key_prefix()) + "*", count=1000))
        pipe = client.pipeline(transaction=False)
        for key in keys:
            pipe.hgetall(key)
        hashes = pipe.execute() if keys else []
    except redis.RedisError as exc:
        raise PresenceUnavailable(f"Redis did not answer: {exc}") from exc
    finally:
        redis_clients.close(client)
    total: dict[str, int] = {}
    processes = 0
    for mapping in hashes:
        if not mapping:  # expired between SCAN and HGETALL
            continue
        processes += 1
        for name, value in mapping.items():
            channel = name.decode()
            total[channel] = total.get(channel, 0) + int(value)
    return {"channels": dict(sorted(total.items())), "processes": processes}
