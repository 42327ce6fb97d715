"""Subscriber counts across real daphne processes sharing one Redis (events/presence.py)."""

from __future__ import annotations

import asyncio

import httpx
import pytest
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


async def wait_for_counts(names: list[str], expected: dict[str, int], timeout: float) -> float:
    """Waits until the counts of `names` are `expected`; returns the seconds it took."""
    loop = asyncio.get_running_loop()
    start = loop.time()
    while True:
        got = await counts_of(names)
        if got == expected:
            return loop.time() - start
        if loop.time() - start > timeout:
            raise AssertionError(f"counts {got}, expected {expected} within {timeout} s")
        await asyncio.sleep(0.05)


async def test_counts_across_two_processes_and_a_killed_one_expires(server_env) -> None:
    env = {**server_env, "EVENTS_PRESENCE_TTL_SECONDS": str(TTL)}
    first, second = Daphne(env).start(), Daphne(env).start()
    a, b = channel(), channel()
    subscribers: list[Subscriber] = []
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

        # SIGKILL: the process cannot clean up, so its counts go when their TTL runs out.
        second.kill()
        took = await wait_for_counts([a, b], {a: 1}, timeout=TTL + 3)
        assert took <= TTL + 1.5, f"the killed process's counts lasted {took:.1f} s"

        # The survivor keeps refreshing its own count well past the TTL.
        await asyncio.sleep(TTL * 2)
        assert await counts_of([a, b]) == {a: 1}
    finally:
        await close_all(subscribers, first, second)


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
