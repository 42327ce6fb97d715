"""Publishing fast: send_events/asend_events, a transaction's events in one round trip,
async publishers sharing commits, POST /events/ with a list, the publisher thread
across forks and process exit."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time

import pytest
import redis.asyncio.client
from django.db import OperationalError, transaction
from django.test import Client

from events import asend_event, asend_events, broadcaster, send_event, send_events
from events.models import Event
from tests.layer_probe import GroupListener, layer_without_redis
from tests.servers import ROOT
from tests.streams import channel

pytestmark = pytest.mark.django_db(transaction=True)

ARRIVE = 3.0
QUIET = 0.5
TOKEN = "s3cret-publish-token"


def stored(name: str) -> list[tuple[int, str, str]]:
    return list(Event.objects.filter(channel=name).order_by("seq").values_list("seq", "type", "data"))


@pytest.fixture
def batches(monkeypatch) -> list[list[str]]:
    """The ids of each batch the publisher thread sends, in order."""
    sent: list[list[str]] = []
    real = broadcaster.send_batch

    async def recording(layer, batch):
        sent.append([f"{m['channel']}:{m['seq']}" for m in batch])
        await real(layer, batch)

    monkeypatch.setattr(broadcaster, "send_batch", recording)
    return sent


@pytest.fixture
def round_trips(monkeypatch) -> dict[str, int]:
    """Redis commands the channel layer issues: pipelines executed and lone PUBLISHes."""
    counts = {"pipelines": 0, "publishes": 0}
    real_execute = redis.asyncio.client.Pipeline.execute
    real_publish = redis.asyncio.client.Redis.publish

    async def execute(self, *args, **kwargs):
        counts["pipelines"] += 1
        return await real_execute(self, *args, **kwargs)

    def publish(self, *args, **kwargs):
        if not isinstance(self, redis.asyncio.client.Pipeline):
            counts["publishes"] += 1
        return real_publish(self, *args, **kwargs)

    monkeypatch.setattr(redis.asyncio.client.Pipeline, "execute", execute)
    monkeypatch.setattr(redis.asyncio.client.Redis, "publish", publish)
    return counts


# -- send_events -----------------------------------------------------------------------


def test_send_events_stores_in_order_and_broadcasts_in_one_round_trip(round_trips) -> None:
    a, b = channel(), channel()
    send_event(a, "before")
    broadcaster.flush()
    round_trips.update(pipelines=0, publishes=0)
    items = [{"channel": a if n % 3 else b, "data": {"n": n}, "event": f"t{n % 2}"} for n in range(30)]
    with GroupListener(a) as on_a, GroupListener(b) as on_b:
        events = send_events(items)
        broadcaster.flush()
        got_a = on_a.messages(count=20, timeout=ARRIVE)
        got_b = on_b.messages(count=10, timeout=ARRIVE)
    # Seqs per channel in the order given, after what the channel had.
    assert [e.sse_id for e in events if e.channel == a] == [f"{a}:{seq}" for seq in range(2, 22)]
    assert [e.sse_id for e in events if e.channel == b] == [f"{b}:{seq}" for seq in range(1, 11)]
    assert all(e.pk for e in events)
    assert [json.loads(e.data)["n"] for e in events] == list(range(30))
    assert stored(b) == [(i + 1, f"t{n % 2}", f'{{"n":{n}}}') for i, n in enumerate(range(0, 30, 3))]
    assert [(m["seq"], m["data"]) for m in got_a] == [(e.seq, e.data) for e in events if e.channel == a]
    assert [m["seq"] for m in got_b] == list(range(1, 11))
    assert round_trips == {"pipelines": 1, "publishes": 0}


def test_send_events_checks_every_item_before_storing_any() -> None:
    a = channel()
    cases = [
        ([{"channel": a, "data": 1}, {"channel": "bad name", "data": 2}], r"^event 1: channel 'bad name'"),
        ([{"channel": a, "data": 1}, {"channel": a}], r'^event 1: no "data" field'),
        ([{"data": 1}], r'^event 0: no "channel" field'),
        ([{"channel": a, "data": 1, "type": "x"}], r"^event 0: unknown field\(s\): type"),
        ([{"channel": a, "data": object()}], r"^event 0: event data is not JSON-serialisable"),
        ([{"channel": a, "data": 1, "event": "a b"}], r"^event 0: event type 'a b' may only contain"),
        ([[a, 1]], r"^event 0: an event must be an object"),
    ]
    for items, match in cases:
        with pytest.raises(ValueError, match=match):
            send_events(items)
    assert stored(a) == []
    assert send_events([]) == []


def test_a_transactions_events_go_out_together_at_commit(batches) -> None:
    a, b = channel(), channel()
    with GroupListener(a) as listener:
        with transaction.atomic():
            for n in range(20):
                send_event(a if n % 2 else b, n)
            send_events([{"channel": a, "data": "bulk"}])
            broadcaster.flush()
            assert batches == []
            assert listener.messages(timeout=QUIET) == []
        broadcaster.flush()
        received = listener.messages(count=11, timeout=ARRIVE)
    assert len(batches) == 1
    assert batches[0] == [f"{b if n % 2 == 0 else a}:{n // 2 + 1}" for n in range(20)] + [f"{a}:11"]
    assert [m["seq"] for m in received] == list(range(1, 12))


def test_a_rolled_back_savepoint_drops_its_events_from_the_batch(batches) -> None:
    a = channel()
    with transaction.atomic():
        send_event(a, "kept")
        with pytest.raises(RuntimeError), transaction.atomic():
            send_events([{"channel": a, "data": "dropped"}, {"channel": a, "data": "dropped too"}])
            raise RuntimeError
        send_event(a, "also kept")
    broadcaster.flush()
    assert batches == [[f"{a}:1", f"{a}:2"]]
    assert [row[2] for row in stored(a)] == ['"kept"', '"also kept"']


def test_a_batch_whose_last_event_was_rolled_back_is_still_sent(batches) -> None:
    a = channel()
    with GroupListener(a) as listener:
        with transaction.atomic():
            send_event(a, "kept")
            send_event(a, "kept too")
            with pytest.raises(RuntimeError), transaction.atomic():
                send_event(a, "dropped")
                raise RuntimeError
        received = listener.messages(count=2, timeout=ARRIVE)
        assert listener.messages(timeout=QUIET) == []
    assert [(m["seq"], m["data"]) for m in received] == [(1, '"kept"'), (2, '"kept too"')]
    assert [ids for batch in batches for ids in batch] == [f"{a}:1", f"{a}:2"]


def test_events_gathered_after_the_leftover_send_go_out_too(batches, monkeypatch) -> None:
    """The transaction's last hook was dropped with its savepoint, so the leftovers are
    sent from a timer; another hook of the transaction is slow, so the timer fires
    between two of ours: what the later one gathers is sent as well (it arms the timer
    again), not left to the hubs' catch-up from the store."""
    import time

    from events import publish

    monkeypatch.setattr(publish._CommitBatch, "LEFTOVER_SECONDS", 0.01)
    a = channel()
    with GroupListener(a) as listener:
        with transaction.atomic():
            send_event(a, "first")
            transaction.on_commit(lambda: time.sleep(0.5))  # someone else's slow hook
            send_event(a, "second")
            with pytest.raises(RuntimeError), transaction.atomic():
                send_event(a, "dropped")
                raise RuntimeError
        received = listener.messages(count=2, timeout=ARRIVE)
    assert [(m["seq"], m["data"]) for m in received] == [(1, '"first"'), (2, '"second"')]
    assert [ids for batch in batches for ids in batch] == [f"{a}:1", f"{a}:2"]


def test_a_rolled_back_transaction_sends_nothing_and_the_next_one_its_own(batches) -> None:
    a = channel()
    with pytest.raises(RuntimeError), transaction.atomic():
        send_events([{"channel": a, "data": n} for n in range(3)])
        raise RuntimeError
    with transaction.atomic():
        send_event(a, "next")
    broadcaster.flush()
    assert batches == [[f"{a}:1"]]
    assert stored(a) == [(1, "message", '"next"')]


def test_bulk_send_while_redis_is_down_stores_and_logs_one_line(caplog) -> None:
    a = channel()
    with layer_without_redis(), caplog.at_level(logging.WARNING, logger="events"):
        events = send_events([{"channel": a, "data": n} for n in range(50)])
        broadcaster.flush()
    assert [e.seq for e in events] == list(range(1, 51))
    assert len(stored(a)) == 50
    lines = [r for r in caplog.records if r.name == "events.publish"]
    assert len(lines) == 1, [r.getMessage() for r in lines]
    assert "50 events" in lines[0].getMessage() and "stored" in lines[0].getMessage()
    assert lines[0].exc_info is None


# -- asend_event(s) ----------------------------------------------------------------------


@pytest.fixture
def store_rounds(monkeypatch) -> list[int]:
    """The number of events in each transaction of the async publishers' store thread."""
    from events import group_commit

    sizes: list[int] = []
    real = group_commit._store_round

    def counting(prepared):
        sizes.append(len(prepared))
        return real(prepared)

    monkeypatch.setattr(group_commit, "_store_round", counting)
    return sizes


async def test_concurrent_asend_event_calls_share_commits_and_keep_their_order(batches, store_rounds) -> None:
    a = channel()

    async def publisher(k: int) -> list[Event]:
        return [await asend_event(a, {"k": k, "i": i}) for i in range(20)]

    with GroupListener(a) as listener:
        results = await asyncio.gather(*(publisher(k) for k in range(10)))
        await asyncio.to_thread(broadcaster.flush)
        received = await asyncio.to_thread(listener.messages, count=200, timeout=ARRIVE)
    # Each coroutine got its own events back, in the order it sent them.
    for k, events in enumerate(results):
        assert [json.loads(e.data) for e in events] == [{"k": k, "i": i} for i in range(20)]
        assert [e.seq for e in events] == sorted(e.seq for e in events)
    seqs = sorted(e.seq for events in results for e in events)
    assert seqs == list(range(1, 201))
    assert sorted(m["seq"] for m in received) == list(range(1, 201))
    # Shared: each commit holds the next event of every publisher (they all wait on the
    # same round), so ten publishers of twenty events each cost twenty commits, not 200.
    assert sum(store_rounds) == 200
    assert store_rounds == [10] * 20, store_rounds
    # And one broadcast batch per commit at most.
    assert len(batches) <= len(store_rounds)


async def test_asend_events_stores_and_validates_all_or_nothing() -> None:
    a, b = channel(), channel()
    with pytest.raises(ValueError, match=r"^event 1: "):
        await asend_events([{"channel": a, "data": 1}, {"channel": a, "data": 1, "extra": 2}])
    events = await asend_events(
        [{"channel": a, "data": 1}, {"channel": b, "data": 2}, {"channel": a, "data": 3}]
    )
    assert [e.sse_id for e in events] == [f"{a}:1", f"{b}:1", f"{a}:2"]
    assert await asend_events([]) == []
    assert await Event.objects.filter(channel=a).acount() == 2


async def test_asend_event_does_not_block_the_event_loop(monkeypatch) -> None:
    """While asend_event's insert waits on a lock another transaction holds, the event
    loop keeps running: here, it is the loop that ends the other transaction. Were the
    query run on the loop, nothing would release the lock and the other transaction
    would give up waiting for the loop (and the test fail)."""
    import threading

    from django.db import connection

    from events import store
    from events.models import Channel

    a = channel()
    await asend_event(a, "first")  # the channel row exists
    locked, release, entered = threading.Event(), threading.Event(), threading.Event()
    released_by_loop: list[bool] = []

    def hold_the_channel_row() -> None:
        try:
            with transaction.atomic():
                # Locks the row on PostgreSQL, the whole database for writing on SQLite.
                Channel.objects.filter(name=a).update(last_seq=1)
                locked.set()
                released_by_loop.append(release.wait(timeout=30))
        finally:
            connection.close()

    real_append = store.append_one

    def entering(item):
        entered.set()
        return real_append(item)  # blocks on the lock

    monkeypatch.setattr(store, "append_one", entering)
    holder = threading.Thread(target=hold_the_channel_row)
    holder.start()
    await asyncio.to_thread(locked.wait, 30)
    task = asyncio.create_task(asend_event(a, "second"))
    assert await asyncio.to_thread(entered.wait, 30)
    # The loop runs while the store waits on the lock:
    assert not task.done()
    release.set()
    event = await task
    await asyncio.to_thread(holder.join, 30)
    assert released_by_loop == [True]
    assert event.seq == 2
    assert [row[0] for row in await asyncio.to_thread(stored, a)] == [1, 2]


def _store_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "events-store"]


async def test_the_store_thread_ends_when_idle_and_starts_again(monkeypatch) -> None:
    from events import group_commit

    monkeypatch.setattr(group_commit, "IDLE_CLOSE_SECONDS", 0.05)
    a = channel()
    await asend_event(a, 1)
    (thread,) = _store_threads()
    await asyncio.to_thread(thread.join, 10)
    assert not thread.is_alive()  # its database connection closed with it
    assert (await asend_event(a, 2)).seq == 2
    assert [t is not thread for t in _store_threads()] == [True]


async def test_a_coroutine_cancelled_before_its_round_stores_nothing(monkeypatch) -> None:
    from events import group_commit

    a = channel()
    await asend_event(a, "first")
    entered, release = threading.Event(), threading.Event()
    real = group_commit._store_round

    def held(prepared):
        entered.set()
        release.wait(30)
        return real(prepared)

    monkeypatch.setattr(group_commit, "_store_round", held)
    busy = asyncio.create_task(asend_event(a, "in the round"))
    assert await asyncio.to_thread(entered.wait, 30)
    cancelled = asyncio.create_task(asend_event(a, "cancelled while waiting"))
    await asyncio.sleep(0.05)  # handed in, waiting for the next round
    cancelled.cancel()
    release.set()
    assert (await busy).seq == 2
    assert (await asend_event(a, "after")).seq == 3
    assert [row[2] for row in await asyncio.to_thread(stored, a)] == ['"first"', '"in the round"', '"after"']
    assert cancelled.cancelled()


async def test_a_failing_round_fails_every_coroutine_in_it_and_the_next_round_stores(monkeypatch) -> None:
    from events import group_commit

    a = channel()
    real, calls = group_commit._store_round, []

    def failing_first(prepared):
        calls.append(len(prepared))
        if len(calls) == 1:
            raise OperationalError("the database went away")
        return real(prepared)

    monkeypatch.setattr(group_commit, "_store_round", failing_first)
    outcomes = await asyncio.gather(*(asend_event(a, n) for n in range(3)), return_exceptions=True)
    assert [type(o) for o in outcomes] == [OperationalError] * 3
    assert calls == [3]
    assert (await asend_event(a, "again")).seq == 1


async def test_a_store_thread_that_cannot_start_fails_the_round_and_the_next_starts(monkeypatch) -> None:
    from events import group_commit

    real_thread, attempts = threading.Thread, []

    class FailingOnce(real_thread):
        def start(self) -> None:
            attempts.append(self.name)
            if len(attempts) == 1:
                raise RuntimeError("can't start new thread")
            super().start()

    for thread in _store_threads():  # a thread still running would take the round
        await asyncio.to_thread(thread.join, 10)
    assert _store_threads() == []
    monkeypatch.setattr(group_commit.threading, "Thread", FailingOnce)
    a = channel()
    with pytest.raises(RuntimeError, match="can't start new thread"):
        await asyncio.wait_for(asend_event(a, 1), 10)
    assert (await asyncio.wait_for(asend_event(a, 2), 10)).seq == 1
    assert attempts == ["events-store", "events-store"]


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_a_forked_child_stores_through_a_store_thread_of_its_own() -> None:
    """Forked while another thread held the store thread's lock (gunicorn --preload,
    Celery prefork): the child gets a new lock, and its own thread."""
    from events import group_commit

    a = channel()
    asyncio.run(asend_event(a, "parent"))
    held, release = threading.Event(), threading.Event()

    def hold() -> None:
        with group_commit._thread._lock:
            held.set()
            release.wait(10)

    holder = threading.Thread(target=hold)
    holder.start()
    assert held.wait(10)
    pid = os.fork()
    if pid == 0:  # the child
        try:
            event = asyncio.run(asyncio.wait_for(asend_event(a, "child"), 10))
            os._exit(0 if event.seq == 2 else 1)
        finally:
            os._exit(2)
    release.set()
    holder.join(10)
    deadline = time.monotonic() + 30
    while (status := os.waitpid(pid, os.WNOHANG))[0] == 0 and time.monotonic() < deadline:
        time.sleep(0.05)
    if status[0] == 0:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        pytest.fail("the child hung on the store thread's lock")
    assert os.waitstatus_to_exitcode(status[1]) == 0
    assert [row[2] for row in stored(a)] == ['"parent"', '"child"']


# -- POST /events/ -------------------------------------------------------------------------


@pytest.fixture
def token(settings) -> str:
    settings.EVENTS_PUBLISH_TOKEN = TOKEN
    return TOKEN


def post_list(client: Client, body: object, token: str = TOKEN):
    raw = body if isinstance(body, (str, bytes)) else json.dumps(body)
    return client.post(
        "/events/", raw, content_type="application/json", headers={"Authorization": f"Bearer {token}"}
    )


def test_post_a_list_stores_and_broadcasts_every_event(client: Client, token: str) -> None:
    a, b = channel(), channel()
    body = [
        {"channel": a, "event": "one", "data": {"n": 1}},
        {"channel": b, "data": [2]},
        {"channel": a, "event": "three", "data": 3},
    ]
    with GroupListener(a) as listener:
        response = post_list(client, body)
        received = listener.messages(count=2, timeout=ARRIVE)
    assert response.status_code == 201, response.content
    assert response.json() == {"ids": [f"{a}:1", f"{b}:1", f"{a}:2"]}
    assert stored(a) == [(1, "one", '{"n":1}'), (2, "three", "3")]
    assert [(m["seq"], m["event"]) for m in received] == [(1, "one"), (2, "three")]


@pytest.mark.parametrize(
    ("body", "match"),
    [
        ({"channel": "x", "data": 1}, "takes a JSON list of events"),
        ([], "the list is empty"),
        ([{"channel": "ok", "data": 1}, {"channel": "bad name", "data": 1}], "event 1: channel 'bad name'"),
        ([{"channel": "ok", "data": 1}, {"channel": "ok"}], 'event 1: no "data" field'),
        ([{"channel": "ok", "data": 1, "typo": 1}], r"event 0: unknown field(s): typo"),
        ([{"channel": "ok", "data": 1}, 7], "event 1: an event must be an object"),
        ([{"channel": 5, "data": 1}], "event 0: channel must be a string"),
    ],
    ids=["object", "empty", "bad-channel", "no-data", "unknown-field", "not-an-object", "int-channel"],
)
def test_post_a_bad_list_is_400_and_stores_nothing(client: Client, token: str, body, match: str) -> None:
    before = Event.objects.count()
    response = post_list(client, body)
    assert response.status_code == 400, response.content
    assert match in response.json()["error"]
    assert Event.objects.count() == before


def test_post_more_than_the_batch_limit_is_400(client: Client, token: str, settings) -> None:
    settings.EVENTS_MAX_BATCH = 3
    a = channel()
    response = post_list(client, [{"channel": a, "data": n} for n in range(4)])
    assert response.status_code == 400
    assert response.json() == {"error": "4 events in one request, over the limit of 3"}
    assert post_list(client, [{"channel": a, "data": n} for n in range(3)]).status_code == 201
    assert [row[0] for row in stored(a)] == [1, 2, 3]


def test_post_a_list_needs_the_same_credentials(client: Client, token: str) -> None:
    a = channel()
    assert post_list(client, [{"channel": a, "data": 1}], token="wrong").status_code == 403
    response = client.post("/events/", "[]", content_type="application/json")
    assert response.status_code == 401
    assert stored(a) == []


# -- the publisher thread: forks and exit ---------------------------------------------------


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_a_forked_child_broadcasts_through_its_own_thread() -> None:
    """The parent's publisher thread does not exist in a forked child (gunicorn
    --preload, Celery prefork): the child starts its own, and drops nothing it sends."""
    from events.publish import message_for

    a = channel()
    send_event(a, "parent")  # the parent's thread is running
    broadcaster.flush()
    with GroupListener(a) as listener:
        pid = os.fork()
        if pid == 0:  # the child: no database, only the broadcast
            try:
                broadcaster.submit([message_for(Event(channel=a, seq=99, type="message", data='"child"'))])
                os._exit(0 if broadcaster.flush(10) else 1)
            finally:
                os._exit(2)
        _, status = os.waitpid(pid, 0)
        received = listener.messages(count=1, timeout=ARRIVE)
    assert os.waitstatus_to_exitcode(status) == 0
    assert [(m["seq"], m["data"]) for m in received] == [(99, '"child"')]


def test_a_script_that_exits_right_after_send_event_still_broadcasts(server_env: dict[str, str]) -> None:
    a = channel()
    script = textwrap.dedent(
        f"""
        import django
        django.setup()
        from events import send_event, send_events
        send_events([{{"channel": {a!r}, "data": n}} for n in range(5)])
        print(send_event({a!r}, "last").sse_id)
        """
    )
    with GroupListener(a) as listener:
        completed = subprocess.run(
            [sys.executable, "-c", script],
            cwd=ROOT,
            env=server_env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        received = listener.messages(count=6, timeout=ARRIVE)
    assert completed.returncode == 0, completed.stderr
    assert completed.stdout.strip() == f"{a}:6"
    assert [m["seq"] for m in received] == [1, 2, 3, 4, 5, 6]


def test_lists_take_raw_text_events_too(client: Client, token: str) -> None:
    a = channel()
    with GroupListener(a) as listener:
        events = send_events([{"channel": a, "text": "<b>one</b>"}, {"channel": a, "data": {"n": 2}}])
        response = post_list(client, [{"channel": a, "event": "row", "text": "<i>three</i>\r\nfour"}])
        received = listener.messages(count=3, timeout=ARRIVE)
    assert [e.raw for e in events] == [True, False]
    assert response.status_code == 201, response.content
    assert [(m["seq"], m["data"]) for m in received] == [
        (1, "<b>one</b>"),
        (2, '{"n":2}'),
        (3, "<i>three</i>\nfour"),
    ]
    assert [row[1:] for row in Event.objects.filter(channel=a).order_by("seq").values_list("seq", "raw")] == [
        (True,),
        (False,),
        (True,),
    ]
    for bad, match in [
        ({"channel": a, "text": 5}, '"text" must be a string'),
        ({"channel": a, "text": "x", "data": 1}, 'both "data" and "text"'),
    ]:
        with pytest.raises(ValueError, match=match):
            send_events([bad])


def test_a_session_posting_a_list_needs_the_publish_policy_for_every_channel(django_user_model) -> None:
    from django.contrib.auth.models import Permission

    staff = django_user_model.objects.create_user("lister", password="pw", is_staff=True)
    session = Client()
    session.force_login(staff)
    a = channel()
    body = [{"channel": a, "data": 1}]
    # Staff without the add permission: refused.
    assert post_session(session, body).status_code == 403
    staff.user_permissions.add(Permission.objects.get(codename="add_event"))
    session.force_login(django_user_model.objects.get(pk=staff.pk))
    # A private-* channel anywhere in the list: only superusers (the default policy).
    response = post_session(session, [*body, {"channel": f"private-{a}", "data": 2}])
    assert response.status_code == 403
    assert f"private-{a}" in response.json()["error"]
    assert stored(a) == []
    assert post_session(session, body).status_code == 201
    assert [row[0] for row in stored(a)] == [1]


def post_session(client: Client, body: object):
    return client.post("/events/", json.dumps(body), content_type="application/json")
