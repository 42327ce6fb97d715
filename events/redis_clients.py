"""redis-py clients on the channel layer's own Redis, for what lives beside the events
(subscriber counts, /healthz).

They connect exactly as the layer does: the `hosts` of the default layer's CONFIG,
decoded by channels-redis, so a `rediss://` URL, a Sentinel entry or a host pair reach
the same server with the same options as the events. With several hosts (shards),
the subscriber counts live on the first; /healthz asks every one.
"""

from __future__ import annotations

from typing import Any

import redis
import redis.asyncio
import redis.sentinel
from channels_redis.utils import create_pool, decode_hosts
from django.conf import settings

# No call here may wait longer than this for Redis (redis-py waits for ever by default).
TIMEOUT_SECONDS = 2.0


def layer_config() -> dict[str, Any]:
    layers = getattr(settings, "CHANNEL_LAYERS", None) or {}
    config = layers.get("default", {}).get("CONFIG", {})
    return config if isinstance(config, dict) else {}


def layer_hosts() -> list[dict[str, Any]]:
    """The default layer's Redis hosts as channels-redis reads them; [] when it names
    none (an in-memory layer, or none at all)."""
    hosts = layer_config().get("hosts")
    if not hosts or isinstance(hosts, (str, bytes)):
        # channels-redis would fall back to localhost (none) or refuse (a bare string).
        return []
    decoded: list[dict[str, Any]] = decode_hosts(hosts)
    return decoded


def _with_timeouts(host: dict[str, Any]) -> dict[str, Any]:
    # The host's own values win: an operator who set a timeout meant it.
    return {"socket_timeout": TIMEOUT_SECONDS, "socket_connect_timeout": TIMEOUT_SECONDS, **host}


def async_client(host: dict[str, Any]) -> redis.asyncio.Redis:
    """An asyncio client on one host, from channels-redis' own pool factory."""
    return redis.asyncio.Redis(connection_pool=create_pool(_with_timeouts(host)))


def sync_client(host: dict[str, Any]) -> redis.Redis:
    """A blocking client on one host: channels-redis' create_pool, for redis-py's
    blocking classes (channels-redis itself is asyncio only)."""
    options = _with_timeouts(host)
    if "address" in options:
        return redis.Redis.from_url(options.pop("address"), **options)
    if "master_name" in options:
        master = options.pop("master_name")
        sentinel = redis.sentinel.Sentinel(
            options.pop("sentinels"), sentinel_kwargs=options.pop("sentinel_kwargs", None)
        )
        return redis.Redis(connection_pool=redis.sentinel.SentinelConnectionPool(master, sentinel, **options))
    return redis.Redis(**options)


async def aclose(client: redis.asyncio.Redis) -> None:
    """Close an async_client: its connections, and a Sentinel pool's Sentinel connections."""
    sentinel = getattr(client.connection_pool, "sentinel_manager", None)
    await client.aclose(close_connection_pool=True)
    for sentinel_client in getattr(sentinel, "sentinels", []):
        await sentinel_client.aclose(close_connection_pool=True)


def close(client: redis.Redis) -> None:
    """Close a sync_client, as aclose does an async one."""
    sentinel = getattr(client.connection_pool, "sentinel_manager", None)
    client.close()
    client.connection_pool.disconnect()
    for sentinel_client in getattr(sentinel, "sentinels", []):
        sentinel_client.close()
        sentinel_client.connection_pool.disconnect()


async def ping_every_host() -> None:
    """PING each host of the layer (each shard); raises on the first that fails."""
    for host in layer_hosts():
        client = async_client(host)
        try:
            await client.ping()
        finally:
            await aclose(client)
