"""Redis as operators run it, with real processes: a Sentinel failover under load,
channels sharded over two Redis servers, and Redis over TLS (events/layers.py)."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import redis
from asgiref.sync import sync_to_async
from channels.layers import channel_layers as layer_registry
from channels_redis.utils import _consistent_hash
from django.conf import settings as django_settings

from events import presence
from events.layers import channel_layers
from events.messages import group_name
from events.models import Event
from tests.e2e.sse_client import ResumingClient, Subscriber
from tests.redis_nodes import RedisProcess, SentinelSetup, tls_capable_redis_server
from tests.servers import ROOT, Daphne, RedisServer, free_port
from tests.streams import channel

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

# The site's channel-layer prefix (site_config/settings.py, REDIS_PREFIX).
PREFIX = "sse"
# An event that reaches a client within this long of being sent came live (through the
# layer, or a resume that found it at once), not after a stall.
LIVE_LAG_SECONDS = 0.5


def ticker(env: dict[str, str], count: int, interval: float, *channels: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "tests.e2e.ticker", str(count), str(interval), *channels],
        cwd=ROOT,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,  # broadcast failures during the outage, by design
    )


def use_layer(url: str) -> None:
    """Point this test process's channel layer (and presence) at `url`."""
    django_settings.CHANNEL_LAYERS = channel_layers(url, prefix=PREFIX)
    layer_registry.backends.clear()


@pytest.fixture
def restore_layer() -> Iterator[None]:
    old = django_settings.CHANNEL_LAYERS
    yield
    django_settings.CHANNEL_LAYERS = old
    layer_registry.backends.clear()


def ticks(client: ResumingClient | Subscriber, channels: list[str]) -> list[tuple[str, int, int]]:
    """(channel, seq, n) of each tick received, in arrival order: the ticker sent tick n
    on channels[n % len(channels)]; its seq is that channel's in the stream's id."""
    received = []
    for sse in client.events:
        if sse.event == "tick":
            n = json.loads(sse.data)["n"]
            name = channels[n % len(channels)]
            positions = dict(part.rsplit(":", 1) for part in sse.id.split(","))
            received.append((name, int(positions[name]), n))
    return received


# -- Sentinel failover ---------------------------------------------------------------


@pytest.fixture
def sentinels() -> Iterator[SentinelSetup]:
    setup = SentinelSetup(down_after_ms=1000, failover_timeout_ms=3000).start()
    yield setup
    setup.stop()


async def test_sentinel_failover_loses_nothing(sentinels: SentinelSetup, server_env, restore_layer) -> None:
    """A master, a replica, three Sentinels; two daphne processes and a publisher on the
    redis+sentinel:// URL; streams open with events flowing; the master SIGKILLed.
    Sentinel promotes the replica; within the failover time plus 5 s events flow live
    again, and every stream (cut and resumed, or not) has every stored event once, in
    order."""
    env = {**server_env, "REDIS_URL": sentinels.url}
    name = channel("failover")
    path = f"/events/{name}/"
    first, second = Daphne(env).start(), Daphne(env).start()
    clients = [
        ResumingClient([first.url], path),
        ResumingClient([second.url], path),
        ResumingClient([first.url, second.url], path, drop_every=13),  # resumes all along
    ]
    count, interval = 140, 0.1
    old_master = sentinels.master.port
    publisher = None
    try:
        for client in clients:
            client.start()
        for client in clients:
            await client.wait_for(lambda events, c=client: c.last_id is not None, 10)
        publisher = ticker(env, count, interval, name)
        for client in clients:
            await client.wait_for(lambda events: len(events) >= 10, 20)  # flowing live

        killed_at = time.time()
        sentinels.master.kill()
        # The failover as Sentinel does it: until the Sentinels name another master.
        while (port := await asyncio.to_thread(sentinels.master_port)) in (old_master, None):
            assert time.time() - killed_at < 30, "Sentinel did not promote the replica"
            await asyncio.sleep(0.05)
        failover = time.time() - killed_at
        assert port == sentinels.replica.port

        assert await asyncio.to_thread(publisher.wait, 60) == 0
        for client in clients:
            await client.wait_for(lambda events: len(events) >= count, 30)
        await asyncio.sleep(0.5)  # nothing more (a duplicate) arrives
        # Subscriber counts follow the Sentinels too: written to and read from the new master.
        use_layer(sentinels.url)
        deadline = time.monotonic() + 10
        while (await asyncio.to_thread(presence.counts))["channels"].get(name) != len(clients):
            assert time.monotonic() < deadline, "subscriber counts did not reach the new master"
            await asyncio.sleep(0.2)
    finally:
        if publisher is not None and publisher.poll() is None:
            publisher.kill()
        for client in clients:
            await client.stop()
        first.stop()
        second.stop()

    stored = await sync_to_async(list)(
        Event.objects.filter(channel=name).order_by("seq").values_list("seq", "data")
    )
    assert [seq for seq, _ in stored] == list(range(1, count + 1))
    assert [json.loads(data)["n"] for _, data in stored] == list(range(count))
    recovered = []
    for client in clients:
        assert client.resets == 0
        # Every stored event, none twice, in order: the ids and the payloads alike.
        assert ticks(client, [name]) == [(name, seq, seq - 1) for seq in range(1, count + 1)]
        # The first event sent after the kill that reached this client live.
        live = [
            arrived - killed_at
            for sse, arrived in zip(client.events, client.arrived, strict=True)
            if (sent := json.loads(sse.data)["t"]) > killed_at and arrived - sent < LIVE_LAG_SECONDS
        ]
        assert live, "no event arrived live after the failover"
        recovered.append(live[0])
    assert max(recovered) < failover + 5, (failover, recovered)
    print(
        f"sentinel failover: promoted {failover:.2f} s after the kill; first live event "
        f"{min(recovered):.2f} s after it (slowest stream {max(recovered):.2f} s); "
        f"connections per stream {[c.connections for c in clients]}; {count} events, lost 0, duplicated 0"
    )


# -- sharding --------------------------------------------------------------------------


def shard_of(name: str, shards: int) -> int:
    """The shard channels-redis sends an SSE channel's group to (its own hash)."""
    return _consistent_hash(f"{PREFIX}__group__{group_name(name)}", shards)


def publishes(server: RedisServer) -> int:
    """PUBLISH commands the server has run so far."""
    with redis.Redis.from_url(server.url) as client:
        return int(client.info("commandstats").get("cmdstat_publish", {}).get("calls", 0))


async def test_channels_are_sharded_over_two_redis_servers(server_env, restore_layer) -> None:
    """REDIS_URL with two URLs: each channel's group lives on one of the servers, both
    carry some, and every event reaches every stream once, through the layer."""
    servers = [RedisServer(), RedisServer()]
    for server in servers:
        server.start()
    url = ",".join(server.url for server in servers)
    env = {**server_env, "REDIS_URL": url}
    names: dict[int, list[str]] = {0: [], 1: []}
    while min(len(group) for group in names.values()) < 4:
        name = channel("shard")
        shard = shard_of(name, 2)
        if len(names[shard]) < 4:
            names[shard].append(name)
    everything = names[0] + names[1]
    path = "/events/?" + "&".join(f"channel={name}" for name in everything)
    first, second = Daphne(env).start(), Daphne(env).start()
    count = 80
    try:
        async with Subscriber(first.url + path) as one, Subscriber(second.url + path) as two:
            # Each server holds the subscriptions of its own channels' groups, only those
            # (beside the product's own groups, which live on one shard or the other).
            ours = {f"{PREFIX}__group__{group_name(n)}" for n in everything}
            for shard, server in enumerate(servers):
                with redis.Redis.from_url(server.url) as client:
                    subscribed = {c.decode() for c in client.pubsub_channels(f"{PREFIX}__group__*")}
                assert subscribed & ours == {f"{PREFIX}__group__{group_name(n)}" for n in names[shard]}
            published_before = [publishes(server) for server in servers]
            publisher = ticker(env, count, 0.02, *everything)
            assert await asyncio.to_thread(publisher.wait, 60) == 0
            # Each server carried the broadcasts of its own channels (and perhaps the
            # hubs' pings): the load is split, not copied.
            carried = [
                publishes(server) - before for server, before in zip(servers, published_before, strict=True)
            ]
            assert all(count // 2 <= n < count for n in carried), carried
            await one.wait_for(count, 20)
            await two.wait_for(count, 20)
            await asyncio.sleep(0.3)
            # Presence lives on the first server, and counts both processes' streams.
            use_layer(url)
            counts = (await asyncio.to_thread(presence.counts))["channels"]
            assert {name: counts.get(name) for name in everything} == dict.fromkeys(everything, 2)
        # /healthz asks every shard: with the second one down it answers 503, and says
        # which check failed in the log (staff would see it in the answer too).
        async with httpx.AsyncClient(timeout=10) as http:
            healthy = await http.get(first.url + "/healthz")
            assert healthy.status_code == 200
            assert "health check redis_shards failed" not in first.output()
            servers[1].stop()
            broken = await http.get(first.url + "/healthz")
        assert broken.status_code == 503
        assert broken.json() == {"status": "unavailable"}
        assert "health check redis_shards failed" in first.output()
    finally:
        first.stop()
        second.stop()
        for server in servers:
            server.stop()

    for stream in (one, two):
        received = ticks(stream, everything)
        assert sorted(n for _, _, n in received) == list(range(count))  # each once
        for name in everything:
            assert [seq for c, seq, _ in received if c == name] == list(range(1, count // 8 + 1))


# -- TLS -------------------------------------------------------------------------------


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=60)


@pytest.fixture
def tls_redis() -> Iterator[tuple[RedisProcess, Path]]:
    binary = tls_capable_redis_server()
    if binary is None:
        pytest.skip(
            "no redis-server built with TLS here (tests/test_layers.py checks the rediss:// settings)"
        )
    workdir = Path(tempfile.mkdtemp(prefix="events-test-tls-"))
    # A throwaway CA and a server certificate for 127.0.0.1, valid for a day, with the
    # extensions Python 3.13's strict verification (VERIFY_X509_STRICT) wants: key usage
    # on the CA, an authority key identifier on the server's.
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=events test CA",
             "-addext", "basicConstraints=critical,CA:TRUE",
             "-addext", "keyUsage=critical,keyCertSign,cRLSign",
             "-keyout", "ca.key", "-out", "ca.crt", cwd=workdir)  # fmt: skip
    _openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=127.0.0.1",
             "-keyout", "server.key", "-out", "server.csr", cwd=workdir)  # fmt: skip
    (workdir / "san.cnf").write_text("subjectAltName=IP:127.0.0.1\nauthorityKeyIdentifier=keyid,issuer\n")
    _openssl("x509", "-req", "-in", "server.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial",
             "-days", "1", "-extfile", "san.cnf", "-out", "server.crt", cwd=workdir)  # fmt: skip
    port = free_port()
    ca = workdir / "ca.crt"
    server = RedisProcess(
        "redis-tls",
        ["--port", "0", "--tls-port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
         "--dir", str(workdir), "--tls-cert-file", str(workdir / "server.crt"),
         "--tls-key-file", str(workdir / "server.key"), "--tls-ca-cert-file", str(ca),
         "--tls-auth-clients", "no"],
        port,
        lambda: redis.Redis(host="127.0.0.1", port=port, ssl=True, ssl_ca_certs=str(ca), socket_timeout=1),
    )  # fmt: skip
    server.start(binary=binary)
    yield server, ca
    server.stop()


async def test_rediss_url_carries_events_presence_and_health(tls_redis, server_env, restore_layer) -> None:
    server, ca = tls_redis
    url = f"rediss://127.0.0.1:{server.port}/0?ssl_ca_certs={ca}"
    env = {**server_env, "REDIS_URL": url}
    name = channel("tls")
    daphne = Daphne(env).start()  # healthy: /healthz reached Redis over TLS
    try:
        async with (
            Subscriber(f"{daphne.url}/events/{name}/") as stream,
            httpx.AsyncClient(timeout=10) as http,
        ):
            response = await http.post(
                f"{daphne.url}/events/{name}/",
                json={"data": {"over": "tls"}},
                headers={"Authorization": f"Bearer {env['EVENTS_PUBLISH_TOKEN']}"},
            )
            assert response.status_code == 201, response.text
            [event] = await stream.wait_for(1, 10)
            assert json.loads(event.data) == {"over": "tls"}
            use_layer(url)
            await asyncio.sleep(0.3)  # the hub writes its counts in its own task
            assert (await asyncio.to_thread(presence.counts))["channels"].get(name) == 1
            # The certificate is checked: without the CA, or without TLS, no connection.
            for wrong in (f"rediss://127.0.0.1:{server.port}/0", f"redis://127.0.0.1:{server.port}/0"):
                use_layer(wrong)
                with pytest.raises(presence.PresenceUnavailable):
                    await asyncio.to_thread(presence.counts)
    finally:
        daphne.stop()
