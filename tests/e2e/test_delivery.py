"""Delivery guarantees with real processes: process death, Redis outage, slow clients,
shutdown, and messages the layer never delivered (README "Resume" and "When Redis or the
database goes away")."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections import defaultdict
from collections.abc import Iterator

import httpx
import psutil
import pytest
from asgiref.sync import sync_to_async
from channels.layers import channel_layers
from django.conf import settings as django_settings

from events import broadcaster, send_event, store
from events.conf import DEFAULTS
from tests.e2e.sse_client import ResumingClient, Subscriber
from tests.servers import ROOT, Daphne, RedisServer
from tests.streams import channel

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


def by_channel(events, channels: list[str]) -> dict[str, list[tuple[int, object]]]:
    """Per channel, the (seq, payload) received, read off the multi-channel ids."""
    seqs: dict[str, list[tuple[int, object]]] = defaultdict(list)
    previous: dict[str, int] = dict.fromkeys(channels, 0)
    for sse in events:
        if sse.event == "stream-reset":
            continue
        position = dict(part.rsplit(":", 1) for part in sse.id.split(","))
        changed = [c for c in channels if int(position[c]) != previous[c]]
        assert len(changed) == 1, (sse.id, previous)
        seqs[changed[0]].append((int(position[changed[0]]), json.loads(sse.data)))
        previous = {c: int(position[c]) for c in channels}
    return seqs


@pytest.fixture
def private_redis() -> Iterator[RedisServer]:
    server = RedisServer()
    server.start()
    old = django_settings.CHANNEL_LAYERS
    django_settings.CHANNEL_LAYERS = {
        "default": {**old["default"], "CONFIG": {**old["default"]["CONFIG"], "hosts": [server.url]}}
    }
    channel_layers.backends.clear()
    yield server
    django_settings.CHANNEL_LAYERS = old
    channel_layers.backends.clear()
    server.stop()


def assert_exactly_once_in_order(client: ResumingClient, a: str, b: str, per_publisher: int) -> int:
    assert client.resets == 0
    events = [e for e in client.events if e.event == "chaos"]
    payloads = [(json.loads(e.data)["tag"], json.loads(e.data)["n"]) for e in events]
    assert len(payloads) == len(set(payloads)) == 2 * per_publisher, "lost or duplicated"
    for tag in ("p1", "p2"):
        assert sorted(n for t, n in payloads if t == tag) == list(range(per_publisher))
    received = by_channel(events, [a, b])
    for name in (a, b):
        # Per channel: seqs 1..k with no gap or repeat, and each publisher's events in
        # the order it sent them.
        assert [seq for seq, _ in received[name]] == list(range(1, len(received[name]) + 1))
        for tag in ("p1", "p2"):
            ns = [p["n"] for _, p in received[name] if p["tag"] == tag]
            assert ns == sorted(ns)
    return len(events)


async def test_chaos_exactly_once_in_order(server_env) -> None:
    """Two publisher processes, two daphne processes (one SIGKILLed and restarted), a
    client that keeps hanging up and resuming across both, and one attached to the
    killed process when it dies: every event arrives once, in order, at both."""
    a, b = channel(), channel()
    first, second = Daphne(server_env).start(), Daphne(server_env).start()
    path = f"/events/?channel={a}&channel={b}"
    roaming = ResumingClient([first.url, second.url], path, drop_every=17)
    # Only ever connects to the process that is killed: certainly attached at the kill,
    # then refused while it is down, then resuming on its restart.
    pinned = ResumingClient([first.url], path)
    per_publisher = 150
    try:
        roaming.start()
        pinned.start()
        await roaming.wait_for(lambda events: roaming.last_id is not None, 10)
        await pinned.wait_for(lambda events: pinned.last_id is not None, 10)
        publishers = [
            subprocess.Popen(
                [sys.executable, "-m", "tests.e2e.publisher", tag, str(per_publisher), a, b],
                cwd=ROOT,
                env=server_env,
            )
            for tag in ("p1", "p2")
        ]
        await asyncio.sleep(1.0)
        assert pinned.connections == 1
        first.kill()  # SIGKILL, clients attached
        await asyncio.sleep(1.0)
        first.start()
        for publisher in publishers:
            assert await asyncio.to_thread(publisher.wait, 120) == 0
        total = 2 * per_publisher
        await roaming.wait_for(lambda events: len(events) >= total, 60)
        await pinned.wait_for(lambda events: len(events) >= total, 60)
        await asyncio.sleep(0.5)
    finally:
        await roaming.stop()
        await pinned.stop()
        first.stop()
        second.stop()

    assert pinned.connections >= 2, "the pinned client was not cut off by the kill"
    count = assert_exactly_once_in_order(roaming, a, b, per_publisher)
    assert assert_exactly_once_in_order(pinned, a, b, per_publisher) == count
    print(
        f"chaos: {count} events; roaming client {roaming.connections} connections, "
        f"{roaming.failures} failed; pinned client {pinned.connections} connections, "
        f"{pinned.failures} failed; lost 0, duplicated 0"
    )


async def test_redis_outage_loses_nothing(private_redis: RedisServer, server_env, caplog) -> None:
    env = {**server_env, "REDIS_URL": private_redis.url}
    server = Daphne(env).start()
    name = channel()
    client = ResumingClient([server.url], f"/events/{name}/", pause=0.2).start()
    try:
        await client.wait_for(lambda events: client.last_id is not None, 10)
        await sync_to_async(send_event)(name, 1)
        await client.wait_for(lambda events: len(events) >= 1, 10)

        private_redis.stop()
        # Publishing while Redis is down stores the event and logs; it does not raise.
        stored = await sync_to_async(send_event)(name, 2)
        assert stored.seq == 2
        await sync_to_async(broadcaster.flush)()  # the publisher thread has tried and logged
        assert "broadcast of event" in caplog.text
        before = client.connections
        # The stream notices the layer is gone and ends; the client keeps retrying.
        await client.wait_for(lambda events: client.connections > before, 20)

        private_redis.start()
        await client.wait_for(lambda events: len(events) >= 2, 30)
        await sync_to_async(send_event)(name, 3)  # publishing recovered, daphne untouched
        await client.wait_for(lambda events: len(events) >= 3, 30)
        # Publishing through daphne itself recovered too, without a restart.
        async with httpx.AsyncClient(timeout=10) as http:
            response = await http.post(
                f"{server.url}/events/{name}/",
                json={"data": 4},
                headers={"Authorization": f"Bearer {env['EVENTS_PUBLISH_TOKEN']}"},
            )
        assert response.status_code == 201, response.text
        await client.wait_for(lambda events: len(events) >= 4, 30)
    finally:
        await client.stop()
        server.stop()
    assert [json.loads(e.data) for e in client.events] == [1, 2, 3, 4]
    assert [e.id for e in client.events] == [f"{name}:{n}" for n in (1, 2, 3, 4)]


async def test_message_the_layer_never_delivered_is_filled_from_the_store(daphne: Daphne) -> None:
    """An event stored but never broadcast (as when the layer drops a message) reaches
    the stream as soon as the next one arrives, in order."""
    name = channel()
    async with Subscriber(f"{daphne.url}/events/{name}/") as subscriber:
        await sync_to_async(store.append)(name, "message", '"dropped"')  # no broadcast
        await sync_to_async(send_event)(name, "next")
        events = await subscriber.wait_for(2)
    assert [(e.id, e.data) for e in events] == [(f"{name}:1", '"dropped"'), (f"{name}:2", '"next"')]


async def test_slow_client_is_ended_and_memory_stays_bounded(daphne: Daphne) -> None:
    name = channel()
    stalled = socket.create_connection(("127.0.0.1", daphne.port))
    stalled.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    stalled.sendall(f"GET /events/{name}/ HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode())
    process = psutil.Process(daphne.process.pid)
    payload = "x" * 40_000
    count = 400  # 16 MB in all
    try:
        async with Subscriber(f"{daphne.url}/events/{name}/") as reader:
            await asyncio.sleep(0.3)
            rss_before = process.memory_info().rss
            peak = rss_before
            for n in range(count):
                await sync_to_async(send_event)(name, {"n": n, "pad": payload})
                if n % 20 == 0:
                    peak = max(peak, process.memory_info().rss)
            events = await reader.wait_for(count, timeout=60)
            peak = max(peak, process.memory_info().rss)
        assert [json.loads(e.data)["n"] for e in events] == list(range(count))
        growth = peak - rss_before
        assert growth < 10 * 1024 * 1024, f"daphne grew by {growth / 1e6:.1f} MB"
        # The stalled connection was ended by the server: reading it reaches EOF/reset.
        stalled.settimeout(10)
        ended = False
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            try:
                if not stalled.recv(1 << 20):
                    ended = True
                    break
            except ConnectionResetError:
                ended = True
                break
        assert ended
        assert "does not read; ending it" in daphne.output()
    finally:
        stalled.close()


async def test_sigterm_ends_streams_with_a_jittered_retry(server_env) -> None:
    # Twenty streams from one address opened at once: over the default per-client
    # limit on set-ups in flight, which this test is not about.
    daphne = Daphne({**server_env, "EVENTS_MAX_PENDING_SETUPS_PER_CLIENT": "0"}).start()
    try:
        await _sigterm_ends_streams(daphne)
    finally:
        daphne.stop()


async def _sigterm_ends_streams(daphne: Daphne) -> None:
    name = channel()
    count = 20

    async def tail(client: httpx.AsyncClient) -> bytes:
        body = b""
        async with client.stream("GET", f"{daphne.url}/events/{name}/") as response:
            async for chunk in response.aiter_bytes():
                body += chunk
        return body

    async with httpx.AsyncClient(timeout=30, limits=httpx.Limits(max_connections=50)) as client:
        tasks = [asyncio.create_task(tail(client)) for _ in range(count)]
        await asyncio.sleep(1.0)
        started = time.monotonic()
        os.kill(daphne.process.pid, signal.SIGTERM)
        bodies = await asyncio.wait_for(asyncio.gather(*tasks), 15)
        elapsed = time.monotonic() - started
    assert elapsed < 10
    retries = []
    for body in bodies:
        last = body.rstrip(b"\n").rsplit(b"\n\n", 1)[-1]
        assert last.startswith(b"retry: "), body[-80:]
        retries.append(int(last.split(b": ")[1]))
    retry, spread = DEFAULTS["EVENTS_RETRY_MS"], DEFAULTS["EVENTS_SHUTDOWN_RETRY_SPREAD_MS"]
    assert all(retry <= r <= retry + spread for r in retries)
    assert len(set(retries)) > 1, "retry values are not spread"
    assert daphne.process.wait(timeout=15) == 0
