"""The database goes away under a running daphne process and comes back (README
"Deployment"): publishing answers 503 with Retry-After, a new stream 503 before any
byte, open streams keep their live events, what they missed is filled once the
database is back, and the log says so in two lines, without tracebacks.

PostgreSQL: a private cluster the test starts, stops (immediate) and starts again.
SQLite: the volume holding the database file and its -wal and -shm files goes away (as
when it is unmounted) and comes back.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import sqlite3
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator

import httpx
import pytest
import redis

from events import broadcaster
from events.models import Event
from events.publish import message_for
from tests.e2e.sse_client import Subscriber
from tests.postgres_server import PostgresServer, postgres_bin
from tests.servers import Daphne, manage

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

# Inserted as events/store.py's append does, straight into the database daphne uses.
BUMP = (
    "INSERT INTO events_channel (name, last_seq) VALUES ({p}, 1) "
    "ON CONFLICT (name) DO UPDATE SET last_seq = events_channel.last_seq + 1"
)
SEQ = "SELECT last_seq FROM events_channel WHERE name = {p}"
INSERT = (
    "INSERT INTO events_event (channel, seq, type, data, raw, created) "
    "VALUES ({p}, {p}, 'message', {p}, FALSE, {p})"
)
# Once the database is down, this many of the hub's catch-ups with the store fail
# (one every 5 s): the failure is still logged once.
OUTAGE_SECONDS = 11


def append_rows(connection, placeholder: str, channel: str, payloads: list[str]) -> None:
    """Commit events without broadcasting them (as a publisher that has committed and
    not yet broadcast, or died before it could)."""
    p = placeholder
    for payload in payloads:
        cursor = connection.cursor()
        cursor.execute(BUMP.format(p=p), [channel])
        cursor.execute(SEQ.format(p=p), [channel])
        (seq,) = cursor.fetchone()
        cursor.execute(INSERT.format(p=p), [channel, seq, json.dumps(payload), "2026-01-01 00:00:00+00:00"])
        connection.commit()


def wait_for_hub_ping(redis_url: str, prefix: str = "sse") -> None:
    """Block until the daphne's hub pings itself through Redis: its catch-up with the
    store follows at once, and the next one is PING_INTERVAL_SECONDS (5 s) later, so
    rows committed right after this are found only once the database is down."""
    client = redis.Redis.from_url(redis_url)
    pubsub = client.pubsub(ignore_subscribe_messages=True)
    pubsub.psubscribe(f"{prefix}events.hub.*")
    try:
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            if pubsub.get_message(timeout=0.5):
                time.sleep(0.5)  # let that catch-up finish
                return
        raise AssertionError("no liveness ping from the hub within 15 s")
    finally:
        pubsub.close()
        client.close()


async def publish(client: httpx.AsyncClient, daphne: Daphne, name: str, data: object) -> httpx.Response:
    return await client.post(
        f"{daphne.url}/events/{name}/",
        json={"data": data},
        headers={"Authorization": f"Bearer {daphne.env['EVENTS_PUBLISH_TOKEN']}"},
    )


async def outage(
    env: dict[str, str],
    commit_then_go_down: Callable[[str, list[str]], None],
    come_back: Callable[[], None],
) -> dict[str, object]:
    """The scenario, for either database; returns the status codes seen."""
    migrated = manage(env, "migrate", "--noinput", "-v", "0")
    assert migrated.returncode == 0, migrated.stderr
    daphne = Daphne(env).start()
    name = f"db-{uuid.uuid4().hex[:10]}"
    seen: dict[str, object] = {}
    try:
        async with (
            httpx.AsyncClient(timeout=10) as client,
            Subscriber(f"{daphne.url}/events/{name}/") as stream,
        ):
            assert (await publish(client, daphne, name, "before")).status_code == 201
            await stream.wait_for(1)
            await asyncio.to_thread(wait_for_hub_ping, env["REDIS_URL"])
            # Seq 2 is broadcast only once the database is down (its publisher committed
            # just before); seq 3 never is (its publisher died after committing).
            await asyncio.to_thread(commit_then_go_down, name, ["committed, sent late", "never sent"])

            refused = await publish(client, daphne, name, "during")
            seen["publish"] = refused.status_code
            assert refused.status_code == 503, refused.text
            assert "database" in refused.json()["error"]
            assert refused.headers["Retry-After"].isdigit()

            new = await client.get(f"{daphne.url}/events/{name}/")
            seen["new stream"] = new.status_code
            assert new.status_code == 503, new.text
            assert new.headers["Content-Type"] == "application/json"
            assert new.json()["error"]

            health = await client.get(f"{daphne.url}/healthz")
            seen["healthz"] = health.status_code
            assert health.status_code == 503 and health.json()["status"] == "unavailable"

            # The open stream still receives live events.
            late = Event(channel=name, seq=2, type="message", data=json.dumps("committed, sent late"))
            await asyncio.to_thread(broadcaster.submit, [message_for(late)])
            await stream.wait_for(2)
            await asyncio.sleep(OUTAGE_SECONDS)
            assert len(stream.events) == 2, "seq 3 cannot have come from a database that is down"

            await asyncio.to_thread(come_back)
            # What the stream missed arrives once the store answers (the hub's next
            # catch-up), and publishing works again.
            await stream.wait_for(3, timeout=15)
            accepted = await publish(client, daphne, name, "after")
            seen["publish after"] = accepted.status_code
            assert accepted.status_code == 201, accepted.text
            await stream.wait_for(4)
            events = list(stream.events)
            assert not stream.ended.is_set()
    finally:
        daphne.stop()
    assert [json.loads(e.data) for e in events] == ["before", "committed, sent late", "never sent", "after"]
    assert [e.id for e in events] == [f"{name}:{n}" for n in range(1, 5)]
    log = daphne.output()
    assert "Traceback" not in log, log[-4000:]
    assert log.count("catching up channels from the store failed") == 1, log[-4000:]
    assert log.count("the store answers again") == 1, log[-4000:]
    # The lines of the product's loggers are printed once each (not again through
    # the root logger that daphne configures).
    messages = [line.split(": ", 1)[1] for line in log.splitlines() if " events." in line]
    assert messages
    for message in messages:
        assert log.count(message) == 1, f"printed {log.count(message)} times: {message}"
    return seen


@pytest.fixture
def private_postgres() -> Iterator[PostgresServer]:
    bin_dir = postgres_bin()
    if bin_dir is None:
        pytest.skip("PostgreSQL's initdb and pg_ctl are not installed: no private cluster to stop")
    server = PostgresServer(bin_dir)
    try:
        server.init()
        server.start()
        server.create_database("events")
        yield server
    finally:
        server.remove()


async def test_postgresql_outage(server_env, private_postgres: PostgresServer) -> None:
    import psycopg

    url = private_postgres.url("events")
    env = {**server_env, "DATABASE_URL": url}

    def commit_then_go_down(channel: str, payloads: list[str]) -> None:
        with psycopg.connect(url) as connection:
            append_rows(connection, "%s", channel, payloads)
        private_postgres.stop("immediate")

    seen = await outage(env, commit_then_go_down, private_postgres.start)
    print(f"PostgreSQL stopped: {seen}")


async def test_sqlite_file_gone(server_env) -> None:
    directory = tempfile.mkdtemp(prefix="events-test-sqlite-")
    # Daphne opens the database through `mount`, a symbolic link that points at the
    # volume, and during the outage at an empty directory (the bare mount point). So the
    # database file and its -wal and -shm files go and come back together, at once, as
    # with a volume. (Moving the database file alone left its -wal behind: SQLite
    # deletes a -wal found next to an empty database, and the commits still in it were
    # lost.) SQLite resolves the link when a connection opens, so every connection
    # uses the files of one directory.
    volume = os.path.join(directory, "volume")
    mount_point = os.path.join(directory, "mount-point")
    mount = os.path.join(directory, "mnt")
    os.mkdir(volume)
    os.mkdir(mount_point)
    os.symlink(volume, mount)
    path = os.path.join(mount, "db.sqlite3")
    env = {**server_env, "DATABASE_URL": f"sqlite:///{path}"}
    # Held open across the outage, as another process's connection would be: closing
    # the publisher's connection then does not checkpoint, so the rows it committed are
    # still only in the -wal file when the volume goes.
    other: list[sqlite3.Connection] = []

    def mount_at(target: str) -> None:
        link = f"{mount}.new"
        os.symlink(target, link)
        os.replace(link, mount)

    def commit_then_go_down(channel: str, payloads: list[str]) -> None:
        other.append(sqlite3.connect(path, check_same_thread=False))
        other[0].execute("SELECT count(*) FROM events_event").fetchall()
        connection = sqlite3.connect(path)
        try:
            append_rows(connection, "?", channel, payloads)
        finally:
            connection.close()
        assert os.path.getsize(os.path.join(volume, "db.sqlite3-wal")) > 0, "the commits were checkpointed"
        # Gone: what daphne opens at that path now is a new, empty database.
        mount_at(mount_point)

    def come_back() -> None:
        mount_at(volume)

    try:
        seen = await outage(env, commit_then_go_down, come_back)
    finally:
        for connection in other:
            connection.close()
        shutil.rmtree(directory, ignore_errors=True)
    print(f"SQLite file gone: {seen}")
