"""The SSE consumer against real Redis, through channels.testing communicators."""

from __future__ import annotations

import asyncio
import json

import pytest
import redis.asyncio as aioredis
from django.conf import settings as django_settings

from events import asend_event
from events.hub import get_hub
from site_config.asgi import application
from tests.streams import Stream, channel, http_scope, live, open_stream, parse_frames

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("hub_cleanup")]


async def test_headers_and_first_bytes_before_any_event() -> None:
    name = channel()
    stream = await open_stream(f"/events/{name}/")
    assert stream.status == 200
    assert stream.headers[b"content-type"] == b"text/event-stream"
    assert stream.headers[b"cache-control"] == b"no-cache"
    assert stream.headers[b"x-accel-buffering"] == b"no"
    assert b"content-length" not in stream.headers
    first = await stream.read_chunk()
    assert first == b"retry: 3000\n\n:ok\n\n"
    frames = await live(stream)
    # The id block sets the client's position even before the first event.
    assert frames[-1] == {"id": f"{name}:0"}
    await stream.close()


async def test_event_frame_exact_bytes() -> None:
    name = channel()
    stream = await open_stream(f"/events/{name}/")
    await live(stream)
    await asend_event(name, {"id": 42, "status": "paid"}, event="order-updated")
    await stream.frames_until(lambda fs: any("data" in f for f in fs))
    assert stream.buffer.endswith(
        f'id: {name}:1\nevent: order-updated\ndata: {{"id":42,"status":"paid"}}\n\n'.encode()
    )
    await stream.close()


async def test_events_arrive_in_order_with_increasing_ids() -> None:
    name = channel()
    stream = await open_stream(f"/events/{name}/")
    await live(stream)
    for n in range(20):
        await asend_event(name, {"n": n})
    events = await stream.events(20)
    assert [json.loads(e["data"])["n"] for e in events] == list(range(20))
    assert [e["id"] for e in events] == [f"{name}:{n}" for n in range(1, 21)]
    await stream.close()


async def test_other_channels_are_not_delivered() -> None:
    mine, other = channel(), channel()
    stream = await open_stream(f"/events/{mine}/")
    await live(stream)
    await asend_event(other, "not for you")
    await asend_event(mine, "for you")
    events = await stream.events(1)
    assert [e["data"] for e in events] == ['"for you"']
    await stream.close()


async def test_multi_channel_stream_ids_cover_every_channel() -> None:
    a, b = channel(), channel()
    stream = await open_stream("/events/", f"channel={a}&channel={b}".encode())
    frames = await live(stream)
    assert frames[-1]["id"] == f"{a}:0,{b}:0"
    await asend_event(a, 1)
    await asend_event(b, 2)
    await asend_event(a, 3)
    events = await stream.events(3)
    assert [(e["id"], e["data"]) for e in events] == [
        (f"{a}:1,{b}:0", "1"),
        (f"{a}:1,{b}:1", "2"),
        (f"{a}:2,{b}:1", "3"),
    ]
    await stream.close()


async def test_heartbeat_comment_when_idle(settings) -> None:
    settings.EVENTS_HEARTBEAT_SECONDS = 0.2
    stream = await open_stream(f"/events/{channel()}/")
    await live(stream)
    before = len(stream.buffer)
    chunk = await stream.read_chunk(timeout=2)
    assert chunk == b":\n\n"
    assert len(stream.buffer) > before
    await stream.close()


async def test_many_streams_share_one_group_membership() -> None:
    name = channel()
    streams = [await open_stream(f"/events/{name}/") for _ in range(5)]
    for stream in streams:
        await live(stream)
    await asend_event(name, "all")
    for stream in streams:
        assert [e["data"] for e in await stream.events(1)] == ['"all"']
    hub = get_hub()
    assert len(hub.channels[name].subscribers) == 5
    for stream in streams:
        await stream.close()


async def numsub(group: str) -> int:
    client = aioredis.from_url(django_settings.CHANNEL_LAYERS["default"]["CONFIG"]["hosts"][0])
    try:
        prefix = django_settings.CHANNEL_LAYERS["default"]["CONFIG"]["prefix"]
        [(_, count)] = await client.pubsub_numsub(f"{prefix}__group__events.{group}")
        return int(count)
    finally:
        await client.aclose()


async def test_disconnect_leaves_no_group_membership() -> None:
    a, b = channel(), channel()
    first = await open_stream("/events/", f"channel={a}&channel={b}".encode())
    second = await open_stream(f"/events/{a}/")
    await live(first)
    await live(second)
    hub = get_hub()
    assert await numsub(a) == 1 and await numsub(b) == 1
    await first.close()
    # b had only the first stream: forgotten at once locally, and in Redis as soon as
    # the group leave (its own task) is done.
    assert b not in hub.channels
    assert await numsub_becomes(b, 0)
    assert len(hub.streams) == 1  # only the second stream is left
    assert await numsub(a) == 1
    await second.close()
    assert a not in hub.channels and not hub.streams
    assert await numsub_becomes(a, 0)


async def numsub_becomes(name: str, expected: int, timeout: float = 5) -> bool:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while await numsub(name) != expected:
        if loop.time() > deadline:
            return False
        await asyncio.sleep(0.02)
    return True


async def test_disconnected_stream_is_forgotten_while_others_go_on() -> None:
    name = channel()
    gone = await open_stream(f"/events/{name}/")
    staying = await open_stream(f"/events/{name}/")
    await live(gone)
    await live(staying)
    hub = get_hub()
    assert len(hub.channels[name].subscribers) == 2
    await gone.close()
    # Forgotten at once: the hub no longer holds it, so no event is written to it.
    assert len(hub.channels[name].subscribers) == 1
    assert len(hub.streams) == 1
    await asend_event(name, "after")
    [event] = await staying.events(1)
    assert json.loads(event["data"]) == "after"
    assert b"after" not in gone.buffer
    await staying.close()


async def test_stream_without_the_trailing_slash() -> None:
    """GET /events/<channel> used to fall through to the publish view: 405 "GET is not allowed"."""
    name = channel()
    stream = await open_stream(f"/events/{name}")
    assert stream.status == 200
    assert stream.headers[b"content-type"] == b"text/event-stream"
    await live(stream)
    await asend_event(name, {"n": 1})
    [event] = await stream.events(1)
    assert event["id"] == f"{name}:1"
    await stream.close()


@pytest.mark.parametrize(
    "host", [b"evil.example", b"evil.example:80", b""], ids=["other", "other-port", "empty"]
)
async def test_a_host_outside_allowed_hosts_is_400(host: bytes) -> None:
    """Streams skip Django's request handling; they check ALLOWED_HOSTS themselves."""
    path = f"/events/{channel()}/"
    scope = {**http_scope(path), "headers": [(b"host", host)], "server": None}
    stream = await Stream(application, path, scope=scope).open()
    assert stream.status == 400
    assert "Host" in json.loads(await stream.body())["error"]
    assert stream.headers[b"x-content-type-options"] == b"nosniff"


async def test_a_stream_opened_with_a_token_ends_when_the_token_expires() -> None:
    from events.tokens import make_token

    name = channel()
    # int(now + 3): between 2 and 3 s of life, ample to open the stream first.
    token = make_token([name], ttl=3)
    stream = await open_stream("/events/", f"channel={name}&token={token}".encode())
    assert stream.status == 200
    await live(stream)
    # The grant runs out: the server ends the response itself, telling the page why.
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 6
    while not stream.ended:
        await stream.read_chunk(timeout=max(0.01, deadline - loop.time()))
    last = parse_frames(stream.buffer)[-1]
    assert set(last) == {"event", "data"}  # no id: the client's position stays put
    assert (last["event"], json.loads(last["data"])) == ("token-expired", {"channels": [name]})
    await stream.close()
    assert not get_hub().streams
    # Coming back with the same token is refused.
    again = await open_stream("/events/", f"channel={name}&token={token}".encode())
    assert again.status == 403
    assert "expired" in json.loads(await again.body())["error"]


@pytest.mark.parametrize(
    ("path", "query", "reason"),
    [
        ("/events/bad name/", b"", "may only contain"),
        ("/events/" + "x" * 81 + "/", b"", "1 to 80"),
        ("/events/a/b/", b"", "may only contain"),
        ("/events/a/b", b"", "may only contain"),
        ("/events/", b"", "no channel requested"),
        ("/events/", b"channel=", "1 to 80"),
        ("/events/", b"channel=ok&channel=no%0Away", "may only contain"),
        ("/events/", b"channel=%FF%FE", "may only contain"),
        ("/events/", "&".join(f"channel=c{i}" for i in range(11)).encode(), "at most 10"),
    ],
    ids=[
        "space",
        "too-long",
        "slash",
        "slash-no-trailing",
        "none",
        "empty",
        "newline",
        "bad-utf8",
        "too-many",
    ],
)
async def test_bad_channel_requests_are_400_json_before_any_stream(path, query, reason) -> None:
    stream = await open_stream(path, query)
    assert stream.status == 400
    assert stream.headers[b"content-type"] == b"application/json"
    body = json.loads(await stream.body())
    assert reason in body["error"]
    await stream.communicator.wait(5)
    assert not get_hub().streams


async def test_private_channel_is_403_for_anonymous() -> None:
    stream = await open_stream("/events/", b"channel=public&channel=private-ops")
    assert stream.status == 403
    assert "private-ops" in json.loads(await stream.body())["error"]


def failing_policy(user, channel_name):
    raise RuntimeError("the policy's database is down")


async def test_a_failing_policy_is_503_json_not_500(settings, caplog) -> None:
    settings.EVENTS_CHANNEL_POLICY = "tests.test_consumers.failing_policy"
    stream = await open_stream(f"/events/{channel()}/")
    assert stream.status == 503
    assert "try again" in json.loads(await stream.body())["error"]
    await stream.communicator.wait(5)
    assert not get_hub().streams
    assert "failed before it started" in caplog.text


def team_policy(user, channel_name):
    # A custom policy: team-<username> only for that user.
    return not channel_name.startswith("team-") or channel_name == f"team-{user.get_username()}"


async def test_custom_policy_sees_the_session_user(settings, django_user_model) -> None:
    from asgiref.sync import sync_to_async
    from django.test import Client

    settings.EVENTS_CHANNEL_POLICY = "tests.test_consumers.team_policy"

    def login_cookie() -> bytes:
        client = Client()
        client.force_login(django_user_model.objects.create_user("ada", password="pw"))
        return f"sessionid={client.cookies['sessionid'].value}".encode()

    cookie = await sync_to_async(login_cookie)()
    allowed = await open_stream("/events/team-ada/", headers=[(b"cookie", cookie)])
    assert allowed.status == 200
    await allowed.close()
    other = await open_stream("/events/team-bob/", headers=[(b"cookie", cookie)])
    assert other.status == 403
    anonymous = await open_stream("/events/team-ada/")
    assert anonymous.status == 403


async def test_head_request_gets_headers_and_no_stream() -> None:
    stream = await Stream(application, f"/events/{channel()}/", method="HEAD").open()
    assert stream.status == 200
    assert await stream.body() == b""
    await stream.communicator.wait(5)
    assert not get_hub().streams


async def test_rejoining_a_channel_right_after_leaving_still_receives() -> None:
    """A leave and a quick re-join must reach the layer in order (membership lock)."""
    name = channel()
    for _ in range(3):
        stream = await open_stream(f"/events/{name}/")
        await live(stream)
        await stream.close()
    stream = await open_stream(f"/events/{name}/")
    await live(stream)
    await asend_event(name, "still here")
    assert [e["data"] for e in await stream.events(1)] == ['"still here"']
    await stream.close()


async def test_concurrent_opens_of_a_new_channel_all_go_live(settings) -> None:
    settings.EVENTS_MAX_PENDING_SETUPS_PER_CLIENT = 0  # all 50 come from one address
    name = channel()
    streams = await asyncio.gather(*(open_stream(f"/events/{name}/") for _ in range(50)))
    await asyncio.gather(*(live(s) for s in streams))
    await asend_event(name, "fan-out")
    results = await asyncio.gather(*(s.events(1) for s in streams))
    assert all([e["data"] for e in r] == ['"fan-out"'] for r in results)
    await asyncio.gather(*(s.close() for s in streams))


async def test_a_stream_never_waits_for_djangos_sync_thread(monkeypatch) -> None:
    """Channels closes that thread's stale database connections before every message
    (through a hop onto it); a stream's queries run on threads of their own."""
    hops: list[str] = []

    async def hop() -> None:
        hops.append("hop")

    monkeypatch.setattr("channels.consumer.aclose_old_connections", hop)
    monkeypatch.setattr("channels.generic.http.aclose_old_connections", hop)
    stream = await open_stream(f"/events/{channel()}/")
    await live(stream)
    await stream.close()
    assert hops == []
