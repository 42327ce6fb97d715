"""Streams a session authorised end when the session loses its rights: at once on
logout (through the channel layer, so from any process), and within
EVENTS_REAUTH_SECONDS on deactivation or loss of staff status. Token streams keep their
own rule."""

from __future__ import annotations

import asyncio
import json
import uuid

import pytest
from asgiref.sync import sync_to_async
from django.contrib.auth import get_user_model
from django.test import Client

from events import asend_event, reauth
from events.tokens import make_token
from tests import streams
from tests.streams import Stream

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("hub_cleanup")]


@sync_to_async
def logged_in(**fields) -> tuple[Client, bytes, object]:
    user = get_user_model().objects.create_user(f"u-{uuid.uuid4().hex[:8]}", password="pw", **fields)
    client = Client()
    client.force_login(user)
    return client, f"sessionid={client.cookies['sessionid'].value}".encode(), user


async def open_live(path: str, cookie: bytes | None = None, query: bytes = b"") -> Stream:
    return await streams.open_live(path, query, [(b"cookie", cookie)] if cookie else [])


async def revoked(stream: Stream, timeout: float) -> dict:
    frames = await stream.frames_until(
        lambda fs: any(f.get("event") == reauth.ACCESS_REVOKED for f in fs), timeout
    )
    await stream.body(timeout)  # and the response ends
    await stream.close()
    [frame] = [f for f in frames if f.get("event") == reauth.ACCESS_REVOKED]
    assert "id" not in frame  # the client's last id stays where it was
    return json.loads(frame["data"])


async def test_logout_ends_the_users_streams_at_once(settings) -> None:
    settings.EVENTS_REAUTH_SECONDS = 60  # the periodic check cannot be what ends it
    client, cookie, user = await logged_in()
    stream = await open_live(f"/events/user-{user.pk}/", cookie)
    await asend_event(f"user-{user.pk}", "before")
    assert [e["data"] for e in await stream.events(1)] == ['"before"']
    await sync_to_async(client.logout)()
    body = await revoked(stream, timeout=5)
    assert body == {"channels": [f"user-{user.pk}"], "reason": "the session has logged out"}


async def test_logout_leaves_other_sessions_streams_alone(settings) -> None:
    client, cookie, user = await logged_in()
    other_cookie = await sync_to_async(second_session)(user)
    ours = await open_live(f"/events/user-{user.pk}/", cookie)
    theirs = await open_live(f"/events/user-{user.pk}/", other_cookie)
    await sync_to_async(client.logout)()
    await revoked(ours, timeout=5)
    await asend_event(f"user-{user.pk}", "still")
    assert [e["data"] for e in await theirs.events(1)] == ['"still"']
    await theirs.close()


def second_session(user) -> bytes:
    """The same user logged in from another browser."""
    client = Client()
    client.force_login(user)
    return f"sessionid={client.cookies['sessionid'].value}".encode()


@pytest.mark.parametrize("change", ["is_active", "is_staff"], ids=["deactivated", "no-longer-staff"])
async def test_lost_rights_end_private_streams_within_the_interval(settings, change) -> None:
    settings.EVENTS_REAUTH_SECONDS = 0.5
    _, cookie, user = await logged_in(is_staff=True)
    stream = await open_live("/events/private-ops/", cookie)
    await sync_to_async(get_user_model().objects.filter(pk=user.pk).update)(**{change: False})
    body = await revoked(stream, timeout=5)
    assert body == {"channels": ["private-ops"], "reason": "no longer allowed to read channel 'private-ops'"}


async def test_streams_that_keep_their_rights_stay_open(settings) -> None:
    settings.EVENTS_REAUTH_SECONDS = 0.2
    _, cookie, user = await logged_in(is_staff=True)
    stream = await open_live("/events/private-ops/", cookie)
    await asend_event("private-ops", 1)
    await stream.events(1)
    await asyncio.sleep(1.0)  # several checks
    await asend_event("private-ops", 2)
    assert [e["data"] for e in await stream.events(2)] == ["1", "2"]
    assert not stream.ended
    await stream.close()


async def test_token_streams_are_not_ended_by_the_session(settings) -> None:
    settings.EVENTS_REAUTH_SECONDS = 0.2
    client, cookie, user = await logged_in()
    name = f"user-{user.pk}"
    query = f"channel={name}&token={make_token([name])}".encode()
    stream = await open_live("/events/", cookie, query=query)
    await sync_to_async(client.logout)()
    await asyncio.sleep(1.0)
    await asend_event(name, "token")
    assert [e["data"] for e in await stream.events(1)] == ['"token"']
    await stream.close()
