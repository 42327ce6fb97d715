"""POST /events/<channel>/ through the ASGI application (events/publish_asgi.py): Django's
handling in one thread hop, with a database connection kept by the publishing threads."""

from __future__ import annotations

import asyncio
import json

import pytest
from channels.testing import ApplicationCommunicator
from django.core.asgi import get_asgi_application
from django.db.backends.signals import connection_created

from events.models import Event
from events.publish_asgi import THREADS
from routing import build_application
from tests.streams import channel, http_scope

pytestmark = pytest.mark.django_db(transaction=True)

TOKEN = "s3cret-publish-token"


async def post(application, path: str, body: object) -> tuple[int, dict]:
    raw = json.dumps(body).encode()
    headers = [
        (b"authorization", f"Bearer {TOKEN}".encode()),
        (b"content-type", b"application/json"),
        (b"content-length", str(len(raw)).encode()),
    ]
    communicator = ApplicationCommunicator(application, http_scope(path, headers=headers, method="POST"))
    await communicator.send_input({"type": "http.request", "body": raw, "more_body": False})
    start = await communicator.receive_output(10)
    answer = await communicator.receive_output(10)
    await communicator.wait(10)
    return start["status"], json.loads(answer["body"])


@pytest.fixture
def opened(settings) -> list[object]:
    settings.EVENTS_PUBLISH_TOKEN = TOKEN
    connections: list[object] = []

    def count(sender, connection, **kwargs):
        connections.append(connection)

    connection_created.connect(count)
    yield connections
    connection_created.disconnect(count)


async def test_posts_share_the_publishing_threads_connections(settings, opened) -> None:
    """With CONN_MAX_AGE = 0 (this project's setting), Django would connect for every
    request; the publishing threads keep theirs between requests."""
    assert settings.DATABASES["default"]["CONN_MAX_AGE"] == 0
    application = build_application(get_asgi_application())
    a = channel()
    answers = [await post(application, f"/events/{a}/", {"data": n}) for n in range(3 * THREADS)]
    assert [status for status, _ in answers] == [201] * (3 * THREADS)
    assert 1 <= len(opened) <= THREADS, len(opened)
    assert await Event.objects.filter(channel=a).acount() == 3 * THREADS


async def test_a_connection_past_its_time_is_replaced(settings, opened, monkeypatch) -> None:
    from events import publish_asgi

    monkeypatch.setattr(publish_asgi, "KEEP_CONNECTION_SECONDS", 0.0)
    application = build_application(get_asgi_application())
    a = channel()
    for n in range(2 * THREADS):
        status, _ = await post(application, f"/events/{a}/", {"data": n})
        assert status == 201
    # Kept for no time at all: Django's own per-request connect and close.
    assert len(opened) == 2 * THREADS


async def test_a_broken_kept_connection_is_replaced_before_it_fails_a_post(settings, opened) -> None:
    """The server ends the publishing threads' kept connections (as a restart would):
    the next request's health check replaces each, and every POST is stored."""
    from django.db import connection

    if connection.vendor != "postgresql":
        pytest.skip("a SQLite connection has no server to lose")
    application = build_application(get_asgi_application())
    a = channel()
    for n in range(2 * THREADS):
        assert (await post(application, f"/events/{a}/", {"data": n}))[0] == 201

    # The publishing threads' own sessions, and no other (the process's other threads
    # keep theirs for the tests that follow).
    backends = [c.connection.info.backend_pid for c in opened if c.connection is not None]

    def end_backends() -> int:
        with connection.cursor() as cursor:
            sql = "SELECT count(pg_terminate_backend(pid)) FROM unnest(%s::int[]) AS pid"
            cursor.execute(sql, [backends])
            return cursor.fetchone()[0]

    assert 1 <= await asyncio.to_thread(end_backends) <= THREADS
    answers = [await post(application, f"/events/{a}/", {"data": n}) for n in range(2 * THREADS)]
    assert [status for status, _ in answers] == [201] * (2 * THREADS)

    assert await Event.objects.filter(channel=a).acount() == 4 * THREADS
