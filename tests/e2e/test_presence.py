"""Subscriber counts across real daphne processes sharing one Redis (events/presence.py)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import httpx
import pytest
import redis.asyncio
from asgiref.sync import sync_to_async
from django.contrib.auth import get_user_model

from events import presence
from tests.e2e.sse_client import Subscriber, close_all
from tests.servers import Daphne
from tests.streams import channel

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

TTL = 1.0  # EVENTS_PRESENCE_TTL_SECONDS of the daphne processes here


async def counts_of(names: list[str]) -> dict[str, int]:
    counts = (await asyncio.to_thread(presence.counts))["channels"]
    return {name: counts[name] for name in names if name in counts}


async def wait_for_counts(names: list[str], expected: dict[str, int], timeout: float) -> None:
    """Waits until the counts of `names` are `expected` (the timeout only ends a test
    that would otherwise hang)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while (got := await counts_of(names)) != expected:
        assert loop.time() < deadline, f"counts {got}, expected {expected}"
        await asyncio.sleep(0.05)


async def hash_counting(client: redis.asyncio.Redis, name: str, timeout: float = 5) -> bytes:
    """The key of the presence hash that counts `name` (one process's: README "Subscriber
    counts")."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        async for key in client.scan_iter(match=presence.key_prefix() + "*"):
            if await client.hexists(key, name):
                return bytes(key)
        assert loop.time() < deadline, f"no presence hash counts {name}"
        await asyncio.sleep(0.05)


@contextlib.asynccontextmanager
async def key_events(client: redis.asyncio.Redis, key: bytes) -> AsyncIterator[list[str]]:
    """Within the block, the list fills with what happens to `key` ("hset", "del",
    "expired", ...) as Redis reports it: keyspace notifications, on for the block only."""
    before = (await client.config_get("notify-keyspace-events")).get("notify-keyspace-events") or ""
    await client.config_set("notify-keyspace-events", "KA")
    db = client.connection_pool.connection_kwargs.get("db", 0)
    events: list[str] = []
    pubsub = client.pubsub()
    await pubsub.subscribe(f"__keyspace@{db}__:".encode() + key)
    # Subscribed once Redis confirms it: nothing that happens to the key after is missed.
    async with asyncio.timeout(5):
        while (await pubsub.get_message(timeout=1.0) or {}).get("type") != "subscribe":
            pass

    async def read() -> None:
        while True:
            message = await pubsub.get_message(timeout=1.0)
            if message is not None and message["type"] == "message":
                events.append(message["data"].decode())

    reader = asyncio.create_task(read())
    try:
        yield events
    finally:
        reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await reader
        await pubsub.aclose()
        await client.config_set("notify-keyspace-events", before)


async def test_counts_across_two_processes_and_a_killed_one_expires(server_env, redis_url: str) -> None:
    env = {**server_env, "EVENTS_PRESENCE_TTL_SECONDS": str(TTL)}
    first, second = Daphne(env).start(), Daphne(env).start()
    a, b = channel(), channel()
    subscribers: list[Subscriber] = []
    client = redis.asyncio.Redis.from_url(redis_url)
    try:
        for url in (
            f"{first.url}/events/{a}/",
            f"{first.url}/events/{a}/",
            f"{second.url}/events/?channel={a}&channel={b}",
        ):
            subscribers.append(await Subscriber(url).__aenter__())
        await wait_for_counts([a, b], {a: 3, b: 1}, timeout=5)
        assert (await asyncio.to_thread(presence.counts))["processes"] >= 2

        # A stream that closes is no longer counted.
        await subscribers.pop(0).aclose()
        await wait_for_counts([a, b], {a: 2, b: 1}, timeout=5)

        # SIGKILL: the process cannot clean up, so its counts go when their TTL runs out:
        # its hash carries the configured TTL, and it is Redis' expiry that removes it.
        killed = await hash_counting(client, b)
        async with key_events(client, killed) as events:
            # Missing (-2) only between two refreshes of a process the machine held up.
            async with asyncio.timeout(5):
                while (ttl_ms := await client.pttl(killed)) == -2:
                    await asyncio.sleep(0.05)
            assert 0 < ttl_ms <= TTL * 1000
            second.kill()
            await wait_for_counts([a, b], {a: 1}, timeout=TTL + 3)
            loop = asyncio.get_running_loop()
            deadline = loop.time() + TTL + 3
            # The notification may trail the count; the key gone, expired was its last word.
            while not (events[-1:] == ["expired"] and not await client.exists(killed)):
                assert loop.time() < deadline, f"the killed process's hash: {events}"
                await asyncio.sleep(0.05)

        # The survivor keeps refreshing its own count well past the TTL.
        await asyncio.sleep(TTL * 2)
        assert await counts_of([a, b]) == {a: 1}
    finally:
        await close_all(subscribers, first, second)
        await client.aclose()


async def test_presence_endpoint_on_a_running_server(daphne: Daphne) -> None:
    """GET /presence/ through daphne: JSON for staff, a JSON 403 (never a redirect) for others."""
    a = channel()
    user_model = get_user_model()
    await sync_to_async(user_model.objects.create_user)("ops", password="pw-ops-123", is_staff=True)
    async with httpx.AsyncClient(base_url=daphne.url, follow_redirects=False) as client:
        anonymous = await client.get("/presence/")
        assert anonymous.status_code == 403
        assert anonymous.headers["content-type"] == "application/json"
        assert "error" in anonymous.json()

        login = await client.get("/admin/login/")
        token = client.cookies["csrftoken"]
        response = await client.post(
            "/admin/login/?next=/admin/",
            data={"username": "ops", "password": "pw-ops-123", "csrfmiddlewaretoken": token},
            headers={"Referer": f"{daphne.url}/admin/login/"},
        )
        assert login.status_code == 200 and response.status_code == 302, response.text
        async with Subscriber(f"{daphne.url}/events/{a}/"):
            loop = asyncio.get_running_loop()
            deadline = loop.time() + 5
            while True:
                body = (await client.get("/presence/")).json()
                if body["channels"].get(a) == 1:
                    break
                assert loop.time() < deadline, body
                await asyncio.sleep(0.05)
