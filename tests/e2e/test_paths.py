"""End to end: real daphne processes, real Redis, a real SSE client (httpx-sse).

Every way of emitting an event reaches the browsers' streams: the management command
as its own process, the HTTP publish endpoint, a sync Django view, a model signal, an
admin action driven through the admin, and a second daphne process sharing Redis.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
from collections.abc import AsyncIterator

import httpx
import pytest
from asgiref.sync import sync_to_async
from django.contrib.auth import get_user_model

from demo.models import Order
from tests.e2e.sse_client import Subscriber
from tests.servers import Daphne, manage
from tests.streams import channel

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


def data(sse) -> object:
    return json.loads(sse.data)


async def test_management_command_in_its_own_process(daphne: Daphne, server_env) -> None:
    name = channel()
    async with Subscriber(f"{daphne.url}/events/{name}/") as subscriber:
        result = await asyncio.to_thread(
            manage, server_env, "send_event", name, '{"from": "command"}', "--event", "cli"
        )
        assert result.returncode == 0, result.stderr
        assert result.stdout.strip() == f"{name}:1"
        [event] = await subscriber.wait_for(1)
    assert (event.event, data(event), event.id) == ("cli", {"from": "command"}, f"{name}:1")


async def test_http_publish_endpoint(daphne: Daphne, server_env) -> None:
    name = channel()
    token = server_env["EVENTS_PUBLISH_TOKEN"]
    async with Subscriber(f"{daphne.url}/events/{name}/") as subscriber, httpx.AsyncClient() as client:
        response = await client.post(
            f"{daphne.url}/events/{name}/",
            json={"event": "http", "data": [1, "two"]},
            headers={"Authorization": f"Bearer {token}"},
        )
        assert response.status_code == 201, response.text
        assert response.json() == {"id": f"{name}:1"}
        [event] = await subscriber.wait_for(1)
    assert (event.event, data(event)) == ("http", [1, "two"])


async def test_model_signal_in_another_process(daphne: Daphne) -> None:
    """The test process saves a model; the daphne process's stream gets the event."""
    async with Subscriber(f"{daphne.url}/events/orders/") as subscriber:
        order = await sync_to_async(Order.objects.create)(customer="Ada", total=12)
        events = await subscriber.wait_for(1)
    mine = [e for e in events if data(e)["pk"] == order.pk]
    assert [e.event for e in mine] == ["order.created"]
    assert data(mine[0])["fields"]["status"] == "new"
    assert "customer" not in data(mine[0])["fields"]  # the demo names what it sends


@contextlib.asynccontextmanager
async def staff_client(base_url: str) -> AsyncIterator[httpx.AsyncClient]:
    """An HTTP client logged into the admin as a staff user, as a browser would be."""
    await sync_to_async(get_user_model().objects.create_superuser)(
        "staff", "staff@example.com", "pw-for-tests"
    )
    async with httpx.AsyncClient(base_url=base_url, follow_redirects=False) as client:
        login = await client.get("/admin/login/")
        token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', login.text).group(1)
        response = await client.post(
            "/admin/login/",
            data={
                "username": "staff",
                "password": "pw-for-tests",
                "csrfmiddlewaretoken": token,
                "next": "/admin/",
            },
        )
        assert response.status_code == 302, response.text
        yield client


async def test_admin_action_through_the_admin(daphne: Daphne) -> None:
    order = await sync_to_async(Order.objects.create)(customer="Grace", status="paid")
    async with staff_client(daphne.url) as client, Subscriber(f"{daphne.url}/events/orders/") as subscriber:
        page = await client.get("/admin/demo/order/")
        token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page.text).group(1)
        action = re.search(r'<option value="(broadcast_[a-z_]+)"', page.text).group(1)
        response = await client.post(
            "/admin/demo/order/",
            data={"action": action, "_selected_action": [str(order.pk)], "csrfmiddlewaretoken": token},
        )
        assert response.status_code == 302, response.text
        events = await subscriber.wait_for(1)
    assert [(e.event, data(e)) for e in events] == [
        ("order-status", {"id": order.pk, "customer": "Grace", "status": "paid"})
    ]


async def test_sync_view_with_staff_session(daphne: Daphne) -> None:
    order = await sync_to_async(Order.objects.create)(customer="Linus")
    async with staff_client(daphne.url) as client, Subscriber(f"{daphne.url}/events/orders/") as subscriber:
        response = await client.post(
            f"/demo/orders/{order.pk}/ship/", headers={"X-CSRFToken": client.cookies["csrftoken"]}
        )
        assert response.status_code == 200, response.text
        events = await subscriber.wait_for(2)
    assert [e.event for e in events] == ["order.updated", "order-shipped"]
    assert data(events[1]) == {"id": order.pk, "status": "shipped"}


async def test_two_daphne_processes_share_one_redis(daphne: Daphne, server_env) -> None:
    other = Daphne(server_env).start()
    try:
        name = channel()
        async with (
            Subscriber(f"{daphne.url}/events/{name}/") as first,
            Subscriber(f"{other.url}/events/{name}/") as second,
            httpx.AsyncClient() as client,
        ):
            response = await client.post(
                f"{other.url}/events/{name}/",
                json={"data": "once"},
                headers={"Authorization": f"Bearer {server_env['EVENTS_PUBLISH_TOKEN']}"},
            )
            assert response.status_code == 201
            [a] = await first.wait_for(1)
            [b] = await second.wait_for(1)
            await asyncio.sleep(0.3)
            assert len(first.events) == len(second.events) == 1
        assert a.id == b.id == f"{name}:1"
    finally:
        other.stop()


@pytest.fixture
def unlimited_daphne(server_env):
    # Every stream of these tests comes from 127.0.0.1, all at once: the per-client
    # limits (open streams, set-ups in flight) are not what they measure.
    env = {**server_env, "EVENTS_MAX_STREAMS_PER_CLIENT": "0", "EVENTS_MAX_PENDING_SETUPS_PER_CLIENT": "0"}
    server = Daphne(env).start()
    yield server
    server.stop()


async def test_hundreds_of_streams_opened_at_once(unlimited_daphne: Daphne) -> None:
    daphne = unlimited_daphne
    name = channel()
    count = 300
    limits = httpx.Limits(max_connections=count + 10, max_keepalive_connections=0)

    async def first_bytes(client: httpx.AsyncClient) -> tuple[int, bytes]:
        async with client.stream("GET", f"{daphne.url}/events/{name}/") as response:
            chunk = b""
            async for part in response.aiter_bytes():
                chunk += part
                if b"id:" in chunk:
                    break
            return response.status_code, chunk

    async with httpx.AsyncClient(limits=limits, timeout=60) as client:
        results = await asyncio.gather(*(first_bytes(client) for _ in range(count)), return_exceptions=True)
    errors = [r for r in results if isinstance(r, BaseException)]
    assert not errors, errors[:3]
    statuses = [status for status, _ in results]
    assert statuses.count(200) == count, {s: statuses.count(s) for s in set(statuses)}
    assert all(body.startswith(b"retry: ") for _, body in results)
    assert "Too many connections" not in daphne.output()
    assert "Traceback" not in daphne.output()
