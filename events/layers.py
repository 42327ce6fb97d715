"""CHANNEL_LAYERS for settings.py in one line: `CHANNEL_LAYERS = channel_layers(REDIS_URL)`.

Importable from settings (it imports nothing of Django): the layer the product is built
for, and the only one this module writes, channels-redis' pub/sub layer, with no
per-group capacity drops and no group expiry (so the hub never has to join a group
again); the per-channel sequencer (events/sequencer.py) covers what pub/sub can still
lose.

The Redis forms operators run are channels-redis' own `hosts` entries; this module only
spells them from URLs:
- `redis://`, `rediss://` (TLS) and `unix://` URLs are handed over as they are (redis-py
  reads them, with its query options such as `?ssl_ca_certs=...`);
- `redis+sentinel://` and `rediss+sentinel://` become channels-redis' Sentinel entry
  (`sentinels`, `master_name`, `sentinel_kwargs`), see `sentinel_host`;
- several URLs, comma-separated, are several shards: channels-redis spreads channels
  and groups over them by a hash of the name, so every process must list the same URLs
  in the same order.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from typing import Any
from urllib.parse import parse_qsl, unquote, urlencode, urlsplit

from redis import connection

# redis-py's URL parser, typed here (redis-py leaves it unannotated).
parse_url: Callable[[str], dict[str, Any]] = connection.parse_url

PUBSUB_LAYER = "channels_redis.pubsub.RedisPubSubChannelLayer"

PLAIN_SCHEMES = ("redis", "rediss", "unix")
SENTINEL_SCHEMES = ("redis+sentinel", "rediss+sentinel")
SENTINEL_PORT = 26379
# Sentinels are asked for the master on every new connection; one that does not answer
# must not hold that up for long before the next is asked (redis-py has no timeout by
# default). `sentinel_socket_timeout=` in the URL changes it.
SENTINEL_TIMEOUT_SECONDS = 2.0
# A comma that starts another URL (one followed by a scheme), not one inside a
# Sentinel URL's host list.
_URL_SEPARATOR = re.compile(r"\s*,\s*(?=[a-z][a-z0-9+.-]*://)", re.IGNORECASE)


def channel_layers(redis_url: str | Sequence[str], **config: Any) -> dict[str, Any]:
    """The CHANNEL_LAYERS setting for one Redis, or several shards; `config` adds to the
    layer's CONFIG (`prefix=...` and the other options of channels-redis).

    Raises ValueError naming what is wrong with a URL."""
    return {"default": {"BACKEND": PUBSUB_LAYER, "CONFIG": {"hosts": redis_hosts(redis_url), **config}}}


def split_urls(value: str) -> list[str]:
    """`redis://a/0,redis://b/0` -> both URLs; a Sentinel URL's own commas stay."""
    return [url for url in _URL_SEPARATOR.split(value.strip()) if url]


def redis_hosts(redis_url: str | Sequence[str]) -> list[str | dict[str, Any]]:
    """channels-redis `hosts` entries for one URL, a comma-separated list, or a list."""
    urls = split_urls(redis_url) if isinstance(redis_url, str) else list(redis_url)
    if not urls:
        raise ValueError("no Redis URL given")
    return [host_entry(url) for url in urls]


def host_entry(url: str) -> str | dict[str, Any]:
    scheme = url.partition("://")[0].lower() if "://" in url else ""
    if scheme in SENTINEL_SCHEMES:
        return sentinel_host(url)
    if scheme not in PLAIN_SCHEMES:
        raise ValueError(
            f"{_redact(url)!r} is not a Redis URL: use redis://, rediss:// (TLS), unix://, "
            "redis+sentinel:// or rediss+sentinel://"
        )
    parse_url(url)  # redis-py's own reading: a bad port or option is reported here, not later
    return url


def sentinel_host(url: str) -> dict[str, Any]:
    """channels-redis' Sentinel entry for
    `redis+sentinel://[[user]:password@]host[:port][,host[:port]...]/master[/db][?options]`.

    The password (and username) and the query options are the master's, read by redis-py
    as in a `redis://` URL (`socket_timeout`, `ssl_ca_certs`, ...); options starting with
    `sentinel_` are the Sentinels' own (`sentinel_password`, `sentinel_socket_timeout`).
    `rediss+sentinel://` speaks TLS to the Sentinels and the master alike.
    """
    parts = urlsplit(url)
    tls = parts.scheme.lower() == "rediss+sentinel"
    auth, _, hostlist = parts.netloc.rpartition("@")
    sentinels = [_sentinel_address(item, url) for item in hostlist.split(",") if item.strip()]
    if not sentinels:
        raise ValueError(f"{_redact(url)!r} names no Sentinel (host:port after //)")
    path = [unquote(part) for part in parts.path.split("/") if part]
    if not path or len(path) > 2 or (len(path) == 2 and not path[1].isdigit()):
        raise ValueError(f"{_redact(url)!r} must end in /<master name> or /<master name>/<db number>")
    master = path[0]
    sentinel_options: dict[str, str] = {}
    master_options: list[tuple[str, str]] = []
    for name, value in parse_qsl(parts.query, keep_blank_values=True):
        if name.startswith("sentinel_"):
            sentinel_options[name.removeprefix("sentinel_")] = value
        else:
            master_options.append((name, value))
    # redis-py parses the master's part (auth, db, options) as it would a plain URL.
    db = f"/{path[1]}" if len(path) == 2 else ""
    auth_part = f"{auth}@" if auth else ""
    kwargs = parse_url(f"redis://{auth_part}sentinel{db}?{urlencode(master_options)}")
    kwargs.pop("host", None)
    sentinel_kwargs: dict[str, Any] = {
        "socket_timeout": SENTINEL_TIMEOUT_SECONDS,
        "socket_connect_timeout": SENTINEL_TIMEOUT_SECONDS,
    }
    for name, value in sentinel_options.items():
        if name in ("socket_timeout", "socket_connect_timeout"):
            try:
                sentinel_kwargs[name] = float(value)
            except ValueError:
                raise ValueError(f"sentinel_{name}={value!r} is not a number of seconds") from None
        elif name in ("username", "password"):
            sentinel_kwargs[name] = value
        else:
            raise ValueError(
                f"unknown Sentinel option sentinel_{name} (known: sentinel_password, "
                "sentinel_username, sentinel_socket_timeout, sentinel_socket_connect_timeout)"
            )
    if tls:
        # The master's TLS options (certificates, verification) hold for the Sentinels too.
        kwargs["ssl"] = True
        sentinel_kwargs["ssl"] = True
        sentinel_kwargs.update({name: value for name, value in kwargs.items() if name.startswith("ssl_")})
    return {"sentinels": sentinels, "master_name": master, "sentinel_kwargs": sentinel_kwargs, **kwargs}


def _sentinel_address(item: str, url: str) -> tuple[str, int]:
    try:
        parts = urlsplit(f"//{item.strip()}")
        port = parts.port or SENTINEL_PORT
    except ValueError:
        raise ValueError(f"{item.strip()!r} in {_redact(url)!r} is not host:port") from None
    if not parts.hostname:
        raise ValueError(f"{item.strip()!r} in {_redact(url)!r} is not host:port")
    return (parts.hostname, port)


def _redact(url: str) -> str:
    # user:password@ -> user:***@ (the part before the last @ of the authority).
    return re.sub(r"(://[^/@]*:)[^/@]*@", r"\1***@", url)
