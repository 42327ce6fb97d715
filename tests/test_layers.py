"""REDIS_URL's forms (events/layers.py) as channels-redis and redis-py read them, and
the clients presence and /healthz open on the same settings (events/redis_clients.py)."""

from __future__ import annotations

import os
import ssl
import subprocess
import sys

import pytest
import redis.asyncio.sentinel
from channels_redis.pubsub import RedisPubSubChannelLayer
from channels_redis.utils import create_pool, decode_hosts

from events import redis_clients
from events.layers import channel_layers, redis_hosts, split_urls
from tests.servers import ROOT

SENTINEL = "redis+sentinel://:s3cret@10.0.0.1:26379,10.0.0.2,[::1]:26380/mymaster/2"


def test_one_url_is_handed_over_as_it_is() -> None:
    assert channel_layers("redis://h:1/0", prefix="p") == {
        "default": {
            "BACKEND": "channels_redis.pubsub.RedisPubSubChannelLayer",
            "CONFIG": {"hosts": ["redis://h:1/0"], "prefix": "p"},
        }
    }


@pytest.mark.parametrize(
    ("value", "urls"),
    [
        ("redis://a:6379/0,redis://b:6379/0", ["redis://a:6379/0", "redis://b:6379/0"]),
        (
            " redis://a/0 , rediss://b/0 ,unix:///run/r.sock ",
            ["redis://a/0", "rediss://b/0", "unix:///run/r.sock"],
        ),
        (SENTINEL, [SENTINEL]),
        (f"redis://a/0,{SENTINEL}", ["redis://a/0", SENTINEL]),
    ],
    ids=["two", "spaces-and-schemes", "sentinel-commas-stay", "mixed"],
)
def test_several_urls_are_split_only_where_a_url_starts(value: str, urls: list[str]) -> None:
    assert split_urls(value) == urls


def test_sentinel_url_becomes_channels_redis_sentinel_entry() -> None:
    [host] = redis_hosts(SENTINEL)
    assert host == {
        "sentinels": [("10.0.0.1", 26379), ("10.0.0.2", 26379), ("::1", 26380)],
        "master_name": "mymaster",
        "sentinel_kwargs": {"socket_timeout": 2.0, "socket_connect_timeout": 2.0},
        "password": "s3cret",
        "db": 2,
    }
    # channels-redis takes it as it is: its own pool factory builds a Sentinel pool.
    pool = create_pool(decode_hosts([host])[0])
    assert isinstance(pool, redis.asyncio.sentinel.SentinelConnectionPool)
    assert pool.service_name == "mymaster"
    assert pool.connection_kwargs["password"] == "s3cret"
    assert pool.connection_kwargs["db"] == 2
    assert [
        (s.connection_pool.connection_kwargs["host"], s.connection_pool.connection_kwargs["port"])
        for s in pool.sentinel_manager.sentinels
    ] == host["sentinels"]


def test_sentinel_options_and_tls() -> None:
    [host] = redis_hosts(
        "rediss+sentinel://user:pw@s1:5000/m?sentinel_password=sp&sentinel_socket_timeout=0.5"
        "&socket_timeout=3&ssl_ca_certs=/etc/ca.pem&ssl_cert_reqs=required"
    )
    assert host["master_name"] == "m"
    assert host["sentinels"] == [("s1", 5000)]
    assert (host["username"], host["password"], host["socket_timeout"]) == ("user", "pw", 3.0)
    assert host["ssl"] is True
    assert host["sentinel_kwargs"] == {
        "socket_timeout": 0.5,
        "socket_connect_timeout": 2.0,
        "password": "sp",
        "ssl": True,
        "ssl_ca_certs": "/etc/ca.pem",
        "ssl_cert_reqs": "required",
    }
    pool = create_pool(host)
    # TLS to the master (redis-py's Sentinel-managed TLS connection) and to the Sentinels.
    assert pool.connection_class is redis.asyncio.sentinel.SentinelManagedSSLConnection
    sentinel_pool = pool.sentinel_manager.sentinels[0].connection_pool
    assert sentinel_pool.connection_class is redis.asyncio.connection.SSLConnection
    assert sentinel_pool.connection_kwargs["ssl_ca_certs"] == "/etc/ca.pem"


def test_rediss_url_reaches_redis_py_as_tls() -> None:
    """`rediss://` with redis-py's own options, through channels-redis' pool factory."""
    url = "rediss://:pw@cache.example:6380/1?ssl_ca_certs=/etc/ca.pem&ssl_cert_reqs=required"
    [host] = decode_hosts(redis_hosts(url))
    pool = create_pool(host)
    assert pool.connection_class is redis.asyncio.connection.SSLConnection
    kwargs = pool.connection_kwargs
    assert (kwargs["host"], kwargs["port"], kwargs["db"], kwargs["password"]) == (
        "cache.example",
        6380,
        1,
        "pw",
    )
    assert kwargs["ssl_ca_certs"] == "/etc/ca.pem"
    connection = pool.make_connection()
    assert connection.cert_reqs == ssl.CERT_REQUIRED


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("http://h/0", "is not a Redis URL"),
        ("h:6379", "is not a Redis URL"),
        ("redis://h:notaport/0", "Port"),
        ("redis://h/0?socket_timeout=soon", "socket_timeout"),
        ("redis+sentinel://s1,s2", "must end in /<master name>"),
        ("redis+sentinel://s1/m/0/extra", "must end in /<master name>"),
        ("redis+sentinel://s1/m/zero", "must end in /<master name>"),
        ("redis+sentinel:///m", "names no Sentinel"),
        ("redis+sentinel://s1:port/m", "is not host:port"),
        ("redis+sentinel://s1/m?sentinel_colour=red", "unknown Sentinel option sentinel_colour"),
        ("redis+sentinel://s1/m?sentinel_socket_timeout=x", "not a number"),
        ("", "no Redis URL"),
    ],
)
def test_bad_urls_are_named(url: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        redis_hosts(url)


def test_errors_hide_passwords() -> None:
    with pytest.raises(ValueError) as raised:
        redis_hosts("http://user:pw@h/0")
    assert "pw" not in str(raised.value)


async def test_several_urls_are_channels_redis_shards() -> None:
    layer = RedisPubSubChannelLayer(**channel_layers("redis://a:1/0,redis://b:2/0")["default"]["CONFIG"])
    shards = layer._get_layer()._shards
    assert [shard.host for shard in shards] == [{"address": "redis://a:1/0"}, {"address": "redis://b:2/0"}]


@pytest.mark.parametrize(
    ("host", "kind"),
    [
        ("redis://r.example:6380/2", "url"),
        ({"address": "rediss://r.example:6380/0", "ssl_cert_reqs": None}, "url"),
        (("r.example", 6379), "pair"),
        (["r.example", 6379], "pair"),
        (redis_hosts(SENTINEL)[0], "sentinel"),
    ],
    ids=["url", "dict", "tuple", "list", "sentinel"],
)
def test_presence_clients_follow_every_host_form(settings, host, kind) -> None:
    """Presence and /healthz connect as the layer does, with their own timeouts."""
    layer = settings.CHANNEL_LAYERS["default"]
    settings.CHANNEL_LAYERS = {
        "default": {**layer, "CONFIG": {**layer["CONFIG"], "hosts": [host, "redis://x/0"]}}
    }
    [first, second] = redis_clients.layer_hosts()
    assert second == {"address": "redis://x/0"}
    client = redis_clients.sync_client(first)
    kwargs = client.connection_pool.connection_kwargs
    assert kwargs["socket_timeout"] == kwargs["socket_connect_timeout"] == redis_clients.TIMEOUT_SECONDS
    if kind == "sentinel":
        assert isinstance(client.connection_pool, redis.sentinel.SentinelConnectionPool)
        assert client.connection_pool.service_name == "mymaster"
        assert kwargs["password"] == "s3cret"
    else:
        assert kwargs["host"] == "r.example"
    redis_clients.close(client)


def test_no_hosts_means_no_redis(settings) -> None:
    settings.CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}
    assert redis_clients.layer_hosts() == []


def settings_in_a_process(**env: str) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("REDIS_")}
    code = "from site_config import settings as s; print(s.CHANNEL_LAYERS['default']['CONFIG']['hosts'])"
    return subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        env={**base, **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_site_reads_the_sentinel_pair_from_the_environment() -> None:
    result = settings_in_a_process(REDIS_SENTINELS="s1:26379,s2:26380", REDIS_SENTINEL_MASTER="main")
    assert result.returncode == 0, result.stderr
    assert "'master_name': 'main'" in result.stdout
    assert "('s1', 26379), ('s2', 26380)" in result.stdout


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"REDIS_SENTINELS": "s1:26379"}, "go together"),
        ({"REDIS_SENTINELS": "s1", "REDIS_SENTINEL_MASTER": "m", "REDIS_URL": "redis://h/0"}, "not both"),
        ({"REDIS_URL": "redis//h/0"}, "REDIS_URL: 'redis//h/0' is not a Redis URL"),
    ],
)
def test_site_names_a_bad_redis_setting(env: dict[str, str], message: str) -> None:
    result = settings_in_a_process(**env)
    assert result.returncode != 0
    assert "ImproperlyConfigured" in result.stderr
    assert message in result.stderr
