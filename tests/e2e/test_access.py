"""Who may read and publish, through the real HTTP stack (daphne) (README "Publishing over HTTP",
"Reading from another origin" and "Security model")."""

from __future__ import annotations

import asyncio
import time

import httpx
import pytest
from asgiref.sync import sync_to_async
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Permission
from django.core import signing
from django.test import Client

from events import send_event
from events.tokens import SALT, make_token
from tests.e2e.sse_client import Subscriber
from tests.servers import Daphne
from tests.streams import channel

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

ORIGIN = "https://app.example.com"
CREDENTIALED = "https://admin.example.com"


def session_cookie(user) -> dict[str, str]:
    client = Client()
    client.force_login(user)
    return {"sessionid": client.cookies["sessionid"].value}


@sync_to_async
def make_user(name: str, staff: bool = False):
    user = get_user_model().objects.create_user(name, f"{name}@example.com", "pw", is_staff=staff)
    if staff:  # staff who may publish, as the admin's add permission allows
        user.user_permissions.add(
            Permission.objects.get(codename="add_event", content_type__app_label="events")
        )
    return user


async def status_of(url: str, **kwargs) -> tuple[int, dict]:
    async with httpx.AsyncClient(timeout=10, **kwargs) as client, client.stream("GET", url) as response:
        if response.status_code == 200:
            return 200, dict(response.headers)
        await response.aread()
        return response.status_code, response.json()


@pytest.fixture
def cors_daphne(server_env):
    env = {**server_env, "EVENTS_ALLOWED_ORIGINS": ORIGIN, "EVENTS_CREDENTIALED_ORIGINS": CREDENTIALED}
    server = Daphne(env).start()
    yield server
    server.stop()


async def test_user_channel_only_for_that_user(daphne: Daphne) -> None:
    alice, bob = await make_user("alice"), await make_user("bob")
    own = f"user-{alice.pk}"
    cookies = await sync_to_async(session_cookie)(alice)
    async with Subscriber(f"{daphne.url}/events/{own}/", cookies=cookies) as subscriber:
        await sync_to_async(send_event)(own, {"for": "alice"})
        [event] = await subscriber.wait_for(1)
    assert event.json() == {"for": "alice"}
    assert (await status_of(f"{daphne.url}/events/user-{bob.pk}/", cookies=cookies))[0] == 403
    status, body = await status_of(f"{daphne.url}/events/{own}/")
    assert status == 403 and own in body["error"]


async def test_private_channels_for_staff_only(daphne: Daphne) -> None:
    staff, user = await make_user("staffer", staff=True), await make_user("plain")
    url = f"{daphne.url}/events/private-ops/"
    assert (await status_of(url, cookies=await sync_to_async(session_cookie)(staff)))[0] == 200
    assert (await status_of(url, cookies=await sync_to_async(session_cookie)(user)))[0] == 403
    status, body = await status_of(f"{daphne.url}/events/?channel=public&channel=private-ops")
    assert status == 403 and "private-ops" in body["error"]


async def test_subscribe_token_grants_exactly_its_channels(daphne: Daphne) -> None:
    token = make_token(["private-board", "user-999"], ttl=60)
    url = f"{daphne.url}/events/?channel=private-board&channel=user-999&token={token}"
    async with Subscriber(url) as subscriber:
        await sync_to_async(send_event)("private-board", "via token")
        [event] = await subscriber.wait_for(1)
    assert event.data == '"via token"'
    # A subset of the granted channels is fine; anything outside is not.
    assert (await status_of(f"{daphne.url}/events/private-board/?token={token}"))[0] == 200
    status, body = await status_of(f"{daphne.url}/events/?channel=private-board&channel=public&token={token}")
    assert status == 403 and "does not grant channel 'public'" in body["error"]


@pytest.mark.parametrize("kind", ["expired", "tampered", "other-salt", "garbage", "empty"])
async def test_bad_tokens_are_403(daphne: Daphne, kind: str) -> None:
    if kind == "expired":
        token = signing.dumps({"c": ["private-x"], "e": int(time.time()) - 1}, salt=SALT, compress=True)
        reason = "expired"
    elif kind == "tampered":
        good = make_token(["private-x"])
        token = good[:-3] + ("AAA" if not good.endswith("AAA") else "BBB")
        reason = "invalid"
    elif kind == "other-salt":
        token = signing.dumps({"c": ["private-x"], "e": int(time.time()) + 60}, salt="another.salt")
        reason = "invalid"
    elif kind == "garbage":
        token = "%00%FF" * 10
        reason = "subscribe token"
    else:
        token = ""
        reason = "malformed"
    status, body = await status_of(f"{daphne.url}/events/private-x/?token={token}")
    assert status == 403
    assert reason in body["error"]


async def test_cors_on_the_stream(cors_daphne: Daphne) -> None:
    url = f"{cors_daphne.url}/events/{channel()}/"
    status, headers = await status_of(url, headers={"Origin": ORIGIN})
    assert status == 200
    assert headers["access-control-allow-origin"] == ORIGIN
    assert "access-control-allow-credentials" not in headers  # not listed for cookies
    assert headers["vary"] == "Origin"
    status, headers = await status_of(url, headers={"Origin": CREDENTIALED})
    assert headers["access-control-allow-origin"] == CREDENTIALED
    assert headers["access-control-allow-credentials"] == "true"
    status, headers = await status_of(url, headers={"Origin": "https://evil.example"})
    assert status == 200
    assert "access-control-allow-origin" not in headers
    # Referer is never taken for an origin.
    status, headers = await status_of(url, headers={"Referer": ORIGIN + "/page"})
    assert "access-control-allow-origin" not in headers


async def test_cors_preflight_and_publish(cors_daphne: Daphne, server_env) -> None:
    name = channel()
    async with httpx.AsyncClient(base_url=cors_daphne.url) as client:
        preflight = await client.options(
            f"/events/{name}/",
            headers={
                "Origin": ORIGIN,
                "Access-Control-Request-Method": "POST",
                "Access-Control-Request-Headers": "authorization, content-type",
            },
        )
        assert preflight.status_code == 204
        assert preflight.headers["access-control-allow-origin"] == ORIGIN
        assert "POST" in preflight.headers["access-control-allow-methods"]
        assert "Authorization" in preflight.headers["access-control-allow-headers"]
        evil = await client.options(f"/events/{name}/", headers={"Origin": "https://evil.example"})
        assert "access-control-allow-origin" not in evil.headers
        published = await client.post(
            f"/events/{name}/",
            json={"data": 1},
            headers={"Origin": ORIGIN, "Authorization": f"Bearer {server_env['EVENTS_PUBLISH_TOKEN']}"},
        )
        assert published.status_code == 201
        assert published.headers["access-control-allow-origin"] == ORIGIN


async def test_publish_authority(daphne: Daphne, server_env) -> None:
    name = channel()
    url = f"{daphne.url}/events/{name}/"
    async with httpx.AsyncClient() as client:
        assert (await client.post(url, json={"data": 1})).status_code == 401
        wrong = await client.post(url, json={"data": 1}, headers={"Authorization": "Bearer nope"})
        assert wrong.status_code == 403 and wrong.json()["error"] == "invalid publish token"
    user = await make_user("writer")
    async with httpx.AsyncClient(cookies=await sync_to_async(session_cookie)(user)) as client:
        assert (await client.post(url, json={"data": 1})).status_code == 403
    staff = await make_user("editor", staff=True)
    async with httpx.AsyncClient(cookies=await sync_to_async(session_cookie)(staff)) as client:
        no_csrf = await client.post(url, json={"data": 1})
        assert no_csrf.status_code == 403 and "CSRF" in no_csrf.json()["error"]
        # With the CSRF token (cookie and header, as a page of the site sends them): 201.
        csrf = "a" * 32
        client.cookies.set("csrftoken", csrf)
        async with Subscriber(url) as subscriber:
            ok = await client.post(url, json={"event": "staff", "data": 2}, headers={"X-CSRFToken": csrf})
            assert ok.status_code == 201, ok.text
            [event] = await subscriber.wait_for(1)
        assert (event.event, event.data, event.id) == ("staff", "2", ok.json()["id"])


async def test_streams_per_client_limit(server_env) -> None:
    server = Daphne({**server_env, "EVENTS_MAX_STREAMS_PER_CLIENT": "3"}).start()
    try:
        name = channel()
        url = f"{server.url}/events/{name}/"
        subscribers = [Subscriber(url) for _ in range(3)]
        for subscriber in subscribers:
            await subscriber.__aenter__()
        status, body = await status_of(url)
        assert status == 429 and "at most 3" in body["error"]
        await subscribers[0].aclose()
        await asyncio.sleep(0.3)  # the server sees the disconnect
        assert (await status_of(url))[0] == 200
        for subscriber in subscribers[1:]:
            await subscriber.aclose()
    finally:
        server.stop()


async def test_logout_on_one_process_ends_the_users_stream_on_another(daphne: Daphne, server_env) -> None:
    """The stream is on one daphne, the logout reaches another: the channel layer
    carries it, and the stream ends with access-revoked well before the periodic check."""
    other = Daphne(server_env).start()
    try:
        user = await make_user("leaving", staff=True)  # the admin logs out staff only
        cookies = await sync_to_async(session_cookie)(user)
        async with Subscriber(f"{daphne.url}/events/user-{user.pk}/", cookies=cookies) as subscriber:
            csrf = "b" * 32
            async with httpx.AsyncClient(cookies={**cookies, "csrftoken": csrf}, timeout=10) as client:
                response = await client.post(f"{other.url}/admin/logout/", headers={"X-CSRFToken": csrf})
            assert response.status_code == 200, response.text
            [event] = await subscriber.wait_for(1, timeout=5)
            assert event.event == "access-revoked"
            assert "logged out" in event.data
            await asyncio.wait_for(subscriber.ended.wait(), 5)
    finally:
        other.stop()


async def test_token_in_a_header_and_never_in_the_access_log(server_env) -> None:
    """Clients that can send headers pass the token as Authorization: Bearer; URLs that
    carry it (EventSource's only way) leave daphne's access log redacted."""
    server = Daphne({**server_env, "PYTHONUNBUFFERED": "1"}).start()
    try:
        token = make_token(["private-board"], ttl=60)
        bearer = {"Authorization": f"Bearer {token}"}
        async with Subscriber(f"{server.url}/events/private-board/", headers=bearer) as subscriber:
            await sync_to_async(send_event)("private-board", "via header")
            [event] = await subscriber.wait_for(1)
        assert event.data == '"via header"'
        status, body = await status_of(f"{server.url}/events/private-other/", headers=bearer)
        assert status == 403 and "does not grant" in body["error"]
        # In the URL: refused for another channel, so the request completes and is logged.
        assert (await status_of(f"{server.url}/events/private-other/?token={token}"))[0] == 403
        deadline = time.monotonic() + 5
        while "token=[redacted]" not in server.output() and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        log = server.output()
        assert "GET /events/private-other/?token=[redacted]" in log
        assert token not in log
    finally:
        server.stop()
