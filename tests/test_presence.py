"""Live subscriber counts (events/presence.py): the Redis hashes, the hub's hook,
GET /presence/ and the admin, against the tests' real Redis."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from types import SimpleNamespace

import pytest
import redis
from channels.layers import channel_layers
from django.conf import settings as django_settings
from django.test import Client, override_settings

from events import presence, redis_clients
from routing import build_application
from site_config.asgi import application
from tests.servers import free_port
from tests.streams import Stream, channel, live

WAIT = 5.0


def redis_client() -> redis.Redis:
    host = presence.redis_host()
    assert host is not None
    return redis_clients.sync_client(host)


def hub_like(**counts: int) -> SimpleNamespace:
    """What PresenceWriter reads of a hub: channels -> state with `subscribers`."""
    return SimpleNamespace(
        channels={name: SimpleNamespace(subscribers=set(range(n))) for name, n in counts.items()}
    )


@contextmanager
def seeded(**counts: int) -> Iterator[str]:
    """A process's hash as the hub writes it (for the readers' tests)."""
    client = redis_client()
    key = presence.key_prefix() + uuid.uuid4().hex
    client.hset(key, mapping=counts)
    client.pexpire(key, 30_000)
    try:
        yield key
    finally:
        client.delete(key)
        client.close()


def ours(names: list[str]) -> dict[str, int]:
    """The summed counts of the given channels (other tests' streams are ignored)."""
    counts = presence.counts()["channels"]
    return {name: counts[name] for name in names if name in counts}


def wait_until(predicate, timeout: float = WAIT, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not met within {timeout} s")
        time.sleep(0.05)


async def await_counts(names: list[str], expected: dict[str, int], timeout: float = WAIT) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        got = await asyncio.to_thread(ours, names)
        if got == expected:
            return
        if loop.time() > deadline:
            raise AssertionError(f"counts {got}, expected {expected}")
        await asyncio.sleep(0.05)


# -- the hashes ----------------------------------------------------------------------


async def test_writers_are_summed_per_channel_with_a_ttl(settings) -> None:
    settings.EVENTS_PRESENCE_TTL_SECONDS = 7
    a, b = channel(), channel()
    one = presence.PresenceWriter(hub_like(**{a: 2, b: 1}))
    two = presence.PresenceWriter(hub_like(**{a: 3}))
    try:
        await one.write()
        await two.write()
        assert ours([a, b]) == {a: 5, b: 1}
        client = redis_client()
        prefix = django_settings.CHANNEL_LAYERS["default"]["CONFIG"]["prefix"]
        for writer in (one, two):
            assert writer.key == f"{prefix}:presence:{writer.id}"
            assert 0 < client.pttl(writer.key) <= 7000
        client.close()
    finally:
        await one.aclose()
        await two.aclose()
    # A clean close removes the process's counts at once.
    assert ours([a, b]) == {}


async def test_a_cancel_the_redis_client_turns_into_an_error_still_ends_the_writer(monkeypatch) -> None:
    """Cancelled while writing, a Redis client may raise its own error instead of the
    cancel: the writer stops all the same (the hub's aclose() waits for it)."""
    a = channel()
    writer = presence.PresenceWriter(hub_like(**{a: 1}))
    writing = asyncio.Event()

    async def write() -> None:
        writing.set()
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            raise redis.exceptions.ConnectionError("Connection closed by server") from None

    monkeypatch.setattr(writer, "write", write)
    task = asyncio.create_task(writer.run())
    writer.changed()
    await asyncio.wait_for(writing.wait(), 10)
    task.cancel()
    done, _ = await asyncio.wait([task], timeout=10)
    assert done == {task} and task.cancelled()
    await writer.aclose()


async def test_a_hub_without_streams_leaves_no_key() -> None:
    a = channel()
    hub = hub_like(**{a: 1})
    writer = presence.PresenceWriter(hub)
    try:
        await writer.write()
        assert ours([a]) == {a: 1}
        hub.channels[a].subscribers.clear()  # the last stream closed
        await writer.write()
        assert ours([a]) == {}
        assert redis_client().exists(writer.key) == 0
    finally:
        await writer.aclose()


async def test_counts_expire_when_a_writer_stops_refreshing(settings) -> None:
    """A killed process never deletes its hash: the TTL makes its counts vanish."""
    settings.EVENTS_PRESENCE_TTL_SECONDS = 0.3
    a = channel()
    writer = presence.PresenceWriter(hub_like(**{a: 4}))
    await writer.write()
    assert ours([a]) == {a: 4}
    await asyncio.sleep(0.5)
    assert ours([a]) == {}
    await writer.aclose()


def test_prefix_glob_characters_match_only_themselves(settings) -> None:
    """A channel-layer prefix with glob characters must not read other prefixes' keys."""
    client = redis_client()
    other = f"other-{uuid.uuid4().hex[:6]}"
    client.hset(f"{other}:presence:x", mapping={"c": 9})
    try:
        layer = settings.CHANNEL_LAYERS["default"]
        settings.CHANNEL_LAYERS = {"default": {**layer, "CONFIG": {**layer["CONFIG"], "prefix": "*"}}}
        assert presence.counts() == {"channels": {}, "processes": 0}
    finally:
        client.delete(f"{other}:presence:x")
        client.close()


def test_counts_without_redis_are_unavailable(settings) -> None:
    layer = settings.CHANNEL_LAYERS["default"]
    settings.CHANNEL_LAYERS = {
        "default": {**layer, "CONFIG": {**layer["CONFIG"], "hosts": [f"redis://127.0.0.1:{free_port()}/0"]}}
    }
    with pytest.raises(presence.PresenceUnavailable, match="Redis did not answer"):
        presence.counts()
    settings.CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}
    with pytest.raises(presence.PresenceUnavailable, match="need a Redis channel layer"):
        presence.counts()


# -- the hub keeps them up to date ---------------------------------------------------


@pytest.mark.django_db(transaction=True)
async def test_counts_rise_and_fall_as_streams_open_and_close(hub_cleanup) -> None:
    a, b = channel(), channel()
    app = build_application(application)
    first = await Stream(app, f"/events/{a}/").open()
    await live(first)
    await await_counts([a, b], {a: 1})
    second = await Stream(app, f"/events/{a}/").open()
    both = await Stream(app, "/events/", query=f"channel={a}&channel={b}".encode()).open()
    await live(both)
    await await_counts([a, b], {a: 3, b: 1})
    await both.close()
    await await_counts([a, b], {a: 2})
    await first.close()
    await second.close()
    await await_counts([a, b], {})


@pytest.mark.django_db(transaction=True)
async def test_the_hub_refreshes_its_counts_before_they_expire(settings, hub_cleanup) -> None:
    settings.EVENTS_PRESENCE_TTL_SECONDS = 0.6
    a = channel()
    stream = await Stream(build_application(application), f"/events/{a}/").open()
    await await_counts([a], {a: 1})
    # Several TTLs later the count is still there: the hub rewrote it meanwhile.
    for _ in range(6):
        await asyncio.sleep(0.3)
        assert await asyncio.to_thread(ours, [a]) == {a: 1}
    await stream.close()
    await await_counts([a], {})


# -- GET /presence/ ------------------------------------------------------------------


@pytest.fixture
def staff_client(django_user_model) -> Client:
    client = Client()
    client.force_login(django_user_model.objects.create_user("staff", password="pw", is_staff=True))
    return client


def assert_json_error(response, status: int) -> str:
    assert response.status_code == status, response.content
    assert response["Content-Type"] == "application/json"
    return response.json()["error"]


@pytest.mark.django_db
def test_presence_endpoint_for_staff(staff_client: Client, settings) -> None:
    settings.EVENTS_PRESENCE_TTL_SECONDS = 30
    a = channel()
    with seeded(**{a: 2}):
        response = staff_client.get("/presence/")
        assert response.status_code == 200
        assert response["Content-Type"] == "application/json"
        body = response.json()
        assert body["channels"][a] == 2
        assert body["processes"] >= 1
        assert body["ttl_seconds"] == 30


@pytest.mark.django_db
def test_presence_endpoint_refuses_anonymous_with_json_not_a_login_page(client: Client) -> None:
    response = client.get("/presence/")
    assert "log in" in assert_json_error(response, 403)


@pytest.mark.django_db
def test_presence_endpoint_refuses_non_staff(client: Client, django_user_model) -> None:
    client.force_login(django_user_model.objects.create_user("user", password="pw"))
    assert "staff" in assert_json_error(client.get("/presence/"), 403)


@pytest.mark.django_db
def test_presence_endpoint_is_read_only(staff_client: Client) -> None:
    assert_json_error(staff_client.post("/presence/"), 405)


@pytest.mark.django_db
def test_presence_endpoint_without_redis_is_503(staff_client: Client) -> None:
    layer = django_settings.CHANNEL_LAYERS["default"]
    dead = {**layer, "CONFIG": {**layer["CONFIG"], "hosts": [f"redis://127.0.0.1:{free_port()}/0"]}}
    channel_layers.backends.clear()
    try:
        with override_settings(CHANNEL_LAYERS={"default": dead}):
            assert "Redis" in assert_json_error(staff_client.get("/presence/"), 503)
    finally:
        channel_layers.backends.clear()


# -- the admin -----------------------------------------------------------------------


@pytest.mark.django_db
def test_admin_event_list_shows_open_streams(admin_client: Client) -> None:
    a = channel()
    with seeded(**{a: 3}):
        response = admin_client.get("/admin/events/event/")
        html = response.content.decode()
        assert response.status_code == 200
        assert "Open streams now" in html
        assert response.context["presence"]["channels"][a] == 3
        assert f'<a href="/feed/?channel={a}">live feed</a>' in html
    html = admin_client.get("/admin/events/event/").content.decode()
    assert f"?channel={a}" not in html


@pytest.mark.django_db
def test_admin_event_list_works_while_redis_is_down(admin_client: Client) -> None:
    layer = django_settings.CHANNEL_LAYERS["default"]
    dead = {**layer, "CONFIG": {**layer["CONFIG"], "hosts": [f"redis://127.0.0.1:{free_port()}/0"]}}
    channel_layers.backends.clear()
    try:
        with override_settings(CHANNEL_LAYERS={"default": dead}):
            response = admin_client.get("/admin/events/event/")
    finally:
        channel_layers.backends.clear()
    assert response.status_code == 200
    assert "Subscriber counts are unavailable" in response.content.decode()


# -- the setting ---------------------------------------------------------------------


@pytest.mark.parametrize("value", [0, -1, "15", None, True, float("nan"), float("inf")])
def test_bad_ttl_is_reported_by_check(settings, value) -> None:
    from events.checks import check_settings

    settings.EVENTS_PRESENCE_TTL_SECONDS = value
    assert [error.id for error in check_settings()] == ["events.E020"]


@pytest.mark.parametrize("value", [15, 0.5, 120.0])
def test_good_ttl_passes(settings, value) -> None:
    from events.checks import check_settings

    settings.EVENTS_PRESENCE_TTL_SECONDS = value
    assert check_settings() == []
