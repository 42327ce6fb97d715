from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
from channels.layers import channel_layers
from django.db import connection

from events.hub import close_hub
from tests.servers import ROOT, Daphne, RedisServer

# The `sent_events` fixture, enabled as the README tells users to (tests/test_testing.py).
pytest_plugins = ["events.testing"]


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    server = RedisServer()
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="session", autouse=True)
def redis_url(request: pytest.FixtureRequest) -> Iterator[str]:
    """Point the channel layer of this process (and of every child) at the test Redis:
    TEST_REDIS_URL or REDIS_URL when set (README "Tests"), else a private redis-server. Tests
    that stop and restart Redis always start one of their own."""
    from django.conf import settings

    url = os.environ.get("TEST_REDIS_URL") or os.environ.get("REDIS_URL")
    if not url:
        url = request.getfixturevalue("redis_server").url
    old, old_embedded = settings.CHANNEL_LAYERS, settings.EVENTS_EMBEDDED_REDIS
    settings.CHANNEL_LAYERS = {
        "default": {**old["default"], "CONFIG": {**old["default"]["CONFIG"], "hosts": [url]}}
    }
    # The layer no longer points at the embedded Redis of `make run` (events.W031).
    settings.EVENTS_EMBEDDED_REDIS = ""
    channel_layers.backends.clear()
    yield url
    settings.CHANNEL_LAYERS, settings.EVENTS_EMBEDDED_REDIS = old, old_embedded
    channel_layers.backends.clear()


@pytest.fixture(scope="session", autouse=True)
def _end_stray_database_sessions(django_db_setup: None, django_db_blocker: Any) -> Iterator[None]:
    """Before the test database is dropped, end the sessions other threads or killed
    child processes left on it (PostgreSQL refuses to drop a database in use)."""
    yield
    if connection.vendor != "postgresql":
        return
    with django_db_blocker.unblock(), connection.cursor() as cursor:
        cursor.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )


@pytest.fixture(autouse=True)
def _closed_broadcast_breaker() -> None:
    """Every test starts as if the channel layer had never failed in this process: a
    failure in one test (an outage test) must not make the next one skip broadcasts
    (events/broadcaster.py, BREAKER_SECONDS). What an earlier test queued for the
    publisher thread is sent first, under that test's settings' leftovers, not this one's."""
    from events import broadcaster

    broadcaster.flush(10)
    broadcaster.publisher.breaker.close()


@pytest.fixture
async def hub_cleanup() -> AsyncIterator[None]:
    """Stop the test loop's hub at the end, so no task outlives the loop."""
    yield
    await close_hub()


def database_url() -> str:
    """The URL of the database the tests run against (the test database)."""
    settings = connection.settings_dict
    if settings["ENGINE"].endswith("sqlite3"):
        return f"sqlite:///{settings['NAME']}"
    return dj_database_url_for(settings)


def dj_database_url_for(settings: dict[str, Any]) -> str:
    user = settings.get("USER") or ""
    password = f":{settings['PASSWORD']}" if settings.get("PASSWORD") else ""
    auth = f"{user}{password}@" if user else ""
    host = settings.get("HOST") or "127.0.0.1"
    port = f":{settings['PORT']}" if settings.get("PORT") else ""
    return f"postgres://{auth}{host}{port}/{settings['NAME']}"


@pytest.fixture
def server_env(redis_url: str, transactional_db: None) -> dict[str, str]:
    """Environment for child processes: the test Redis, the test database and this
    process's key (subscribe tokens made here must be valid there)."""
    from django.conf import settings

    env = dict(os.environ)
    env.update(
        {
            "SECRET_KEY": settings.SECRET_KEY,
            "REDIS_URL": redis_url,
            "DATABASE_URL": database_url(),
            "DJANGO_SETTINGS_MODULE": "site_config.settings",
            "PYTHONPATH": str(ROOT),
            "EVENTS_LOG_LEVEL": "INFO",
            "EVENTS_PUBLISH_TOKEN": "e2e-publish-token",
        }
    )
    return env


@pytest.fixture
def daphne(server_env: dict[str, str]) -> Iterator[Daphne]:
    server = Daphne(server_env).start()
    yield server
    server.stop()
