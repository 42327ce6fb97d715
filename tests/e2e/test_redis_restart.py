"""A Redis restart (SIGKILL, then the same port again): every daphne process receives
live events again within moments of Redis answering, /healthz says 200 only once its
own subscription delivers, and the outage is logged in two lines, not a traceback a
second (README "Deployment")."""

from __future__ import annotations

import asyncio
import json
import time
import uuid

import httpx
import pytest

from tests.e2e.sse_client import ResumingClient, Subscriber
from tests.servers import Daphne, RedisServer

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

# What the product promises: live events within this long of Redis answering again.
RECOVERY_SECONDS = 2.0


async def wait_healthy(client: httpx.AsyncClient, server: Daphne, timeout: float = 15) -> float:
    """Poll /healthz until it answers 200; returns when (monotonic)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if (await client.get(f"{server.url}/healthz")).status_code == 200:
                return time.monotonic()
        except httpx.HTTPError:
            pass
        await asyncio.sleep(0.05)
    raise AssertionError(f"/healthz of {server.url} did not answer 200 within {timeout} s")


async def publish(client: httpx.AsyncClient, server: Daphne, name: str, data: object) -> None:
    response = await client.post(
        f"{server.url}/events/{name}/",
        json={"data": data},
        headers={"Authorization": f"Bearer {server.env['EVENTS_PUBLISH_TOKEN']}"},
    )
    assert response.status_code == 201, response.text


def payloads(events) -> list[object]:
    return [json.loads(e.data) for e in events if e.event == "message"]


@pytest.mark.parametrize("outage", [1.0, 15.0], ids=["1s", "15s"])
async def test_live_events_right_after_a_redis_restart(server_env, outage: float) -> None:
    redis = RedisServer()
    redis.start()
    env = {**server_env, "REDIS_URL": redis.url}
    servers = [Daphne(env).start(), Daphne(env).start()]
    name = f"rr-{uuid.uuid4().hex[:10]}"
    # A client on each process from before the outage: if its stream is ended, it
    # resumes with Last-Event-ID, as EventSource does.
    resuming = [ResumingClient([server.url], f"/events/{name}/", pause=0.2).start() for server in servers]
    fresh: list[Subscriber] = []
    try:
        async with httpx.AsyncClient(timeout=10) as client:
            for each in resuming:
                await each.wait_for(lambda events, each=each: each.last_id is not None, 10)
            await publish(client, servers[0], name, "before")
            for each in resuming:
                await each.wait_for(lambda events: payloads(events) == ["before"], 10)

            redis.process.kill()  # SIGKILL: no goodbye to the clients
            redis.process.wait()
            redis.process = None
            await asyncio.sleep(outage)
            redis.start()  # the same port
            back = time.monotonic()

            # Each process: as soon as /healthz says 200, a new stream.
            healthy = await asyncio.gather(*(wait_healthy(client, server) for server in servers))
            for server in servers:
                subscriber = Subscriber(f"{server.url}/events/{name}/")
                fresh.append(await subscriber.__aenter__())
            await publish(client, servers[0], name, "after")
            published = time.monotonic()
            for subscriber in fresh:
                await subscriber.wait_for(1, timeout=RECOVERY_SECONDS)
            delivered = time.monotonic()
            for each in resuming:
                await each.wait_for(lambda events: "after" in payloads(events), 10)

            # Past the next liveness pings: the new streams are not ended for a loss
            # that is over, and still receive.
            await asyncio.sleep(6)
            await publish(client, servers[1], name, "later")
            for subscriber in fresh:
                await subscriber.wait_for(2, timeout=5)
            for each in resuming:
                await each.wait_for(lambda events: "later" in payloads(events), 10)
            ended = [subscriber.ended.is_set() for subscriber in fresh]
    finally:
        for subscriber in fresh:
            await subscriber.aclose()
        for each in resuming:
            await each.stop()
        for server in servers:
            server.stop()
        redis.stop()

    assert ended == [False, False], "a stream opened after the recovery was ended"
    for subscriber in fresh:
        assert payloads(subscriber.events) == ["after", "later"]
    for each in resuming:
        # Nothing lost and nothing twice, across however many reconnects it took.
        assert payloads(each.events) == ["before", "after", "later"]
        assert each.resets == 0
    for server in servers:
        log = server.output()
        assert "Traceback" not in log, log[-3000:]
        if outage > 10:
            # Long enough for every process's liveness probe to notice.
            assert log.count("channel layer lost") == 1, log[-3000:]
            assert log.count("channel layer back") == 1, log[-3000:]
    print(
        f"redis restart after {outage:g} s: /healthz 200 after "
        + ", ".join(f"{at - back:.2f} s" for at in healthy)
        + f"; a live event published then reached both processes in {delivered - published:.2f} s"
    )
