"""send_event / asend_event (README "Python interface"): validate, store, broadcast on commit, trim."""

from __future__ import annotations

import asyncio
import logging
import math
import time
import uuid
from collections.abc import Iterator

import pytest
import redis.exceptions
from channels.layers import channel_layers
from django.db import transaction
from django.test import override_settings

from events import asend_event, broadcaster, send_event, send_events
from events.models import Channel, Event
from tests.layer_probe import GroupListener, layer_without_redis
from tests.streams import channel

pytestmark = pytest.mark.django_db(transaction=True)

# How long to wait for a broadcast, and how long silence must last to count as "none".
ARRIVE = 3.0
QUIET = 0.5


def stored(name: str) -> list[tuple[int, str, str]]:
    return list(Event.objects.filter(channel=name).order_by("seq").values_list("seq", "type", "data"))


@pytest.fixture
def dead_layer() -> Iterator[None]:
    with layer_without_redis():
        yield


def test_send_event_stores_and_broadcasts_the_exact_message() -> None:
    name = channel()
    with GroupListener(name) as listener:
        event = send_event(name, {"id": 42, "status": "paid"}, event="order-updated")
        received = listener.messages(count=1, timeout=ARRIVE)
        assert listener.messages(timeout=QUIET) == []
    assert isinstance(event, Event)
    assert event.pk is not None
    assert (event.channel, event.seq, event.type) == (name, 1, "order-updated")
    assert event.sse_id == f"{name}:1"
    assert event.data == '{"id":42,"status":"paid"}'
    assert stored(name) == [(1, "order-updated", '{"id":42,"status":"paid"}')]
    # The broadcast time, for the hubs' delivery lag (events/metrics.py).
    assert abs(time.time() - listener.committed_at[0]) < ARRIVE + 1
    assert received == [
        {
            "type": "events.event",
            "channel": name,
            "seq": 1,
            "event": "order-updated",
            "data": '{"id":42,"status":"paid"}',
        }
    ]


def test_send_event_defaults_to_message_and_counts_up() -> None:
    name = channel()
    with GroupListener(name) as listener:
        ids = [send_event(name, n).sse_id for n in range(3)]
        received = listener.messages(count=3, timeout=ARRIVE)
    assert ids == [f"{name}:1", f"{name}:2", f"{name}:3"]
    assert [(m["seq"], m["event"], m["data"]) for m in received] == [
        (1, "message", "0"),
        (2, "message", "1"),
        (3, "message", "2"),
    ]


def test_payload_json_is_compact_and_unicode() -> None:
    name = channel()
    with GroupListener(name) as listener:
        event = send_event(name, {"text": "café ✓", "list": [1, 2.5, None, True]})
        [message] = listener.messages(count=1, timeout=ARRIVE)
    assert event.data == '{"text":"café ✓","list":[1,2.5,null,true]}'
    assert message["data"] == event.data


def assert_nothing_happened(
    listener: GroupListener, name: str, events_before: int, channels_before: int
) -> None:
    assert listener.messages(timeout=QUIET) == []
    assert stored(name) == []
    assert Event.objects.count() == events_before
    assert Channel.objects.count() == channels_before


@pytest.mark.parametrize(
    ("name", "match"),
    [
        ("", r"channel '' must be 1 to 80 characters long"),
        ("x" * 81, r"must be 1 to 80 characters long"),
        ("bad name", r"channel 'bad name' may only contain letters, digits"),
        ("a/b", r"channel 'a/b' may only contain"),
        ("émoji", r"may only contain"),
        ("line\nbreak", r"may only contain"),
        (None, r"channel must be a string, not NoneType"),
        (42, r"channel must be a string, not int"),
    ],
    ids=["empty", "too-long", "space", "slash", "non-ascii", "newline", "none", "int"],
)
def test_bad_channel_raises_and_stores_nothing(name: object, match: str) -> None:
    probe = channel()
    events_before, channels_before = Event.objects.count(), Channel.objects.count()
    with GroupListener(name if isinstance(name, str) else probe) as listener:
        with pytest.raises(ValueError, match=match):
            send_event(name, {"a": 1})  # type: ignore[arg-type]
        assert listener.messages(timeout=QUIET) == []
    assert Event.objects.count() == events_before
    assert Channel.objects.count() == channels_before


def test_longest_channel_name_is_accepted() -> None:
    name = "c" * 48 + uuid.uuid4().hex  # 80 characters
    assert send_event(name, 1).sse_id == f"{name}:1"


@pytest.mark.parametrize(
    ("event_type", "match"),
    [
        ("", r"event type '' must be 1 to 64 characters long"),
        ("t" * 65, r"must be 1 to 64 characters long"),
        ("order updated", r"event type 'order updated' may only contain"),
        ("a:b", r"may only contain"),
        ("x\ny", r"may only contain"),
        (None, r"event type must be a string, not NoneType"),
    ],
    ids=["empty", "too-long", "space", "colon", "newline", "none"],
)
def test_bad_event_type_raises_and_stores_nothing(event_type: object, match: str) -> None:
    name = channel()
    events_before, channels_before = Event.objects.count(), Channel.objects.count()
    with GroupListener(name) as listener:
        with pytest.raises(ValueError, match=match):
            send_event(name, {"a": 1}, event=event_type)  # type: ignore[arg-type]
        assert_nothing_happened(listener, name, events_before, channels_before)


@pytest.mark.parametrize(
    "data",
    [object(), math.nan, {"x": math.inf}, {1, 2}, {"nested": [{"s": {3}}]}, b"bytes", {(1, 2): "tuple key"}],
    ids=["object", "nan", "inf-nested", "set", "set-nested", "bytes", "tuple-key"],
)
def test_non_json_data_raises_and_stores_nothing(data: object) -> None:
    name = channel()
    events_before, channels_before = Event.objects.count(), Channel.objects.count()
    with GroupListener(name) as listener:
        with pytest.raises(ValueError, match=r"^event data is not JSON-serialisable: ") as info:
            send_event(name, data)
        assert_nothing_happened(listener, name, events_before, channels_before)
    # The original error is chained, not swallowed.
    assert isinstance(info.value.__cause__, (TypeError, ValueError))


def test_too_deeply_nested_data_is_a_value_error() -> None:
    data: list[object] = []
    for _ in range(100_000):
        data = [data]
    name = channel()
    with pytest.raises(ValueError):
        send_event(name, data)
    assert stored(name) == []


def test_payload_size_limit(settings) -> None:
    settings.EVENTS_MAX_PAYLOAD_BYTES = 100
    name = channel()
    events_before, channels_before = Event.objects.count(), Channel.objects.count()
    with GroupListener(name) as listener:
        # A JSON string of 98 characters is 100 bytes with its quotes: exactly the limit.
        send_event(name, "x" * 98)
        [message] = listener.messages(count=1, timeout=ARRIVE)
        assert message["data"] == '"' + "x" * 98 + '"'
        with pytest.raises(ValueError, match=r"event data is 101 bytes as JSON, over the limit of 100 bytes"):
            send_event(name, "x" * 99)
        # Bytes, not characters: "é" is two bytes in UTF-8.
        with pytest.raises(ValueError, match=r"event data is 102 bytes as JSON, over the limit of 100 bytes"):
            send_event(name, "é" * 50)
        assert listener.messages(timeout=QUIET) == []
    assert stored(name) == [(1, "message", '"' + "x" * 98 + '"')]
    assert Event.objects.count() == events_before + 1
    assert Channel.objects.count() == channels_before + 1


def test_broadcast_waits_for_commit() -> None:
    name = channel()
    with GroupListener(name) as listener:
        with transaction.atomic():
            event = send_event(name, {"n": 1})
            assert event.sse_id == f"{name}:1"
            assert listener.messages(timeout=QUIET) == []
        received = listener.messages(count=1, timeout=ARRIVE)
    assert [m["seq"] for m in received] == [1]
    assert stored(name) == [(1, "message", '{"n":1}')]


def test_rolled_back_event_reaches_nobody_and_is_not_stored() -> None:
    name = channel()
    with GroupListener(name) as listener:
        with pytest.raises(RuntimeError), transaction.atomic():
            send_event(name, {"n": 1})
            raise RuntimeError("roll back")
        assert listener.messages(timeout=QUIET) == []
        assert stored(name) == []
        # The seq came back too: the next event is number 1.
        assert send_event(name, {"n": 2}).seq == 1
        [message] = listener.messages(count=1, timeout=ARRIVE)
    assert (message["seq"], message["data"]) == (1, '{"n":2}')


def test_rolled_back_savepoint_only_drops_its_own_event() -> None:
    name = channel()
    with GroupListener(name) as listener:
        with transaction.atomic():
            send_event(name, "kept")
            with pytest.raises(RuntimeError), transaction.atomic():
                send_event(name, "dropped")
                raise RuntimeError("roll back the savepoint")
            send_event(name, "also kept")
        received = listener.messages(count=2, timeout=ARRIVE)
        assert listener.messages(timeout=QUIET) == []
    assert [(m["seq"], m["data"]) for m in received] == [(1, '"kept"'), (2, '"also kept"')]
    assert stored(name) == [(1, "message", '"kept"'), (2, "message", '"also kept"')]


async def test_asend_event_stores_and_broadcasts() -> None:
    name = channel()
    with GroupListener(name) as listener:
        event = await asend_event(name, {"a": 1}, event="async-t")
        received = await asyncio.to_thread(listener.messages, count=1, timeout=ARRIVE)
    assert event.sse_id == f"{name}:1"
    assert received == [
        {"type": "events.event", "channel": name, "seq": 1, "event": "async-t", "data": '{"a":1}'}
    ]
    count = await Event.objects.filter(channel=name, seq=1, type="async-t").acount()
    assert count == 1


async def test_asend_event_validates() -> None:
    name = channel()
    with pytest.raises(ValueError, match="may only contain"):
        await asend_event("bad name", 1)
    with pytest.raises(ValueError, match="not JSON-serialisable"):
        await asend_event(name, object())
    assert await Event.objects.filter(channel=name).acount() == 0


def test_failed_broadcast_is_logged_and_the_event_kept(dead_layer: None, caplog) -> None:
    name = channel()
    with caplog.at_level(logging.ERROR, logger="events"):
        event = send_event(name, {"kept": True})
        broadcaster.flush()
    assert event.sse_id == f"{name}:1"
    assert stored(name) == [(1, "message", '{"kept":true}')]
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR and r.name.startswith("events")]
    assert errors, caplog.text
    assert any(f"{name}:1" in r.getMessage() and "stored" in r.getMessage() for r in errors)


def test_a_redis_that_never_answers_does_not_hang_the_publisher(monkeypatch, caplog) -> None:
    """A Redis host that accepts connections but never replies (a black hole): the
    broadcast is given up after BROADCAST_TIMEOUT_SECONDS, logged, and the event kept."""
    import socket
    import time

    from django.conf import settings

    monkeypatch.setattr(broadcaster, "BROADCAST_TIMEOUT_SECONDS", 0.5)
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        old = settings.CHANNEL_LAYERS["default"]
        url = f"redis://127.0.0.1:{silent.getsockname()[1]}/0"
        hung = {**old, "CONFIG": {**old["CONFIG"], "hosts": [url]}}
        channel_layers.backends.clear()
        try:
            with override_settings(CHANNEL_LAYERS={"default": hung}), caplog.at_level(logging.ERROR):
                name = channel()
                started = time.monotonic()
                event = send_event(name, "kept")
                broadcaster.flush()
                took = time.monotonic() - started
        finally:
            channel_layers.backends.clear()
    # Generous: the point is that it returns at all (unbounded before).
    assert took < 30, took
    assert stored(name) == [(1, "message", '"kept"')]
    assert any(f"{event.sse_id}" in r.getMessage() and "stored" in r.getMessage() for r in caplog.records)


def test_failed_broadcast_is_one_line_at_error_traceback_at_debug(dead_layer: None, caplog) -> None:
    name = channel()
    with caplog.at_level(logging.ERROR, logger="events"):
        send_event(name, 1)
        broadcaster.flush()
    [record] = [r for r in caplog.records if r.name == "events.publish"]
    assert record.exc_info is None
    assert "\n" not in record.getMessage()
    assert "ConnectionError" in record.getMessage()


def test_after_a_failure_publishers_skip_the_layer_for_a_moment(
    dead_layer: None, caplog, monkeypatch
) -> None:
    """While Redis is down, only the first batch waits on it; the next ones within
    BREAKER_SECONDS are stored and skip the broadcast (the hubs deliver them from the store).
    Each event is named in exactly one log line (failed or skipped)."""
    attempts = []
    real = broadcaster.send_batch

    async def counting(layer, batch):
        attempts.append(batch)
        await real(layer, batch)

    monkeypatch.setattr(broadcaster, "send_batch", counting)
    name = channel()
    with caplog.at_level(logging.WARNING, logger="events"):
        events = [send_event(name, n) for n in range(5)]
        broadcaster.flush()
    assert [e.seq for e in events] == [1, 2, 3, 4, 5]
    # The first batch is tried twice (a kept connection may be stale: the second try
    # reconnects); the batches after it are not tried at all.
    assert len(attempts) == 2 and attempts[0] == attempts[1], attempts
    lines = [r.getMessage() for r in caplog.records if r.name == "events.publish"]
    assert all("failed" in line or "skipped" in line for line in lines), lines
    for seq in range(1, 6):
        assert sum(f"{name}:{seq}" in line for line in lines) == 1, lines


def test_an_error_other_than_an_unreachable_layer_does_not_open_the_breaker(monkeypatch, caplog) -> None:
    attempts = []

    async def broken(layer, batch):
        attempts.append(batch)
        raise TypeError("a bug, not an outage")

    monkeypatch.setattr(broadcaster, "send_batch", broken)
    name = channel()
    with caplog.at_level(logging.ERROR, logger="events"):
        send_event(name, 1)
        broadcaster.flush()
        send_event(name, 2)
        broadcaster.flush()
    assert len(attempts) == 2
    assert "TypeError: a bug, not an outage" in caplog.text


def test_publishing_recovers_after_a_failed_broadcast(caplog, monkeypatch) -> None:
    """After the layer comes back (and the breaker's moment has passed), the next event
    is broadcast with the next seq."""
    monkeypatch.setattr(broadcaster.publisher.breaker, "seconds", 0.2)
    name = channel()
    with layer_without_redis(), caplog.at_level(logging.ERROR, logger="events"):
        send_event(name, "lost live, kept stored")
        broadcaster.flush()
    assert any(f"{name}:1" in r.getMessage() for r in caplog.records)
    time.sleep(0.3)
    with GroupListener(name) as listener:
        event = send_event(name, "live again")
        [message] = listener.messages(count=1, timeout=ARRIVE)
    assert event.seq == 2
    assert (message["seq"], message["data"]) == (2, '"live again"')
    assert [row[0] for row in stored(name)] == [1, 2]


def test_history_is_trimmed_to_the_limit(settings) -> None:
    settings.EVENTS_HISTORY_PER_CHANNEL = 10
    name, other = channel(), channel()
    for n in range(5):
        send_event(other, n)
    for n in range(25):
        send_event(name, n)
    # A batch of max(1, 10 // 10) = 1: every publish past the limit trims.
    assert [row[0] for row in stored(name)] == list(range(16, 26))
    assert [row[0] for row in stored(other)] == [1, 2, 3, 4, 5]


def test_bulk_sends_keep_the_history_at_the_limit(settings) -> None:
    settings.EVENTS_HISTORY_PER_CHANNEL = 20
    name = channel()
    oldest = 1
    for round_ in range(1, 11):
        send_events([{"channel": name, "data": n} for n in range(7)])
        last = 7 * round_
        # A list with a seq past the limit that is a multiple of the batch (2) trims
        # back to the newest 20; the first such list is seqs 15..21, whose 21 is odd.
        if last > 21:
            oldest = last - 19
        assert [row[0] for row in stored(name)] == list(range(oldest, last + 1))


def test_a_list_in_a_transaction_trims_at_its_commit(settings) -> None:
    settings.EVENTS_HISTORY_PER_CHANNEL = 20
    name = channel()
    send_events([{"channel": name, "data": n} for n in range(20)])
    with transaction.atomic():
        send_events([{"channel": name, "data": n} for n in range(10)])  # seqs 21..30
        assert len(stored(name)) == 30
    assert [row[0] for row in stored(name)] == list(range(11, 31))


@pytest.fixture
def trim_fails_once(monkeypatch):
    """store.trim raises the given error on its first call, then trims as usual."""
    from events import store

    def install(error: Exception) -> None:
        real_trim, calls = store.trim, []

        def failing_once(*args, **kwargs):
            calls.append(args)
            if len(calls) == 1:
                raise error
            return real_trim(*args, **kwargs)

        monkeypatch.setattr(store, "trim", failing_once)

    return install


def test_a_failed_trim_is_made_up_by_the_next(settings, trim_fails_once) -> None:
    settings.EVENTS_HISTORY_PER_CHANNEL = 20
    name = channel()
    trim_fails_once(RuntimeError("the database went away"))
    for n in range(22):
        send_event(name, n)
    assert [row[0] for row in stored(name)][0] == 1  # seq 22's trim failed
    send_event(name, 22)
    send_event(name, 23)  # seq 24: trims what 22 should have, too
    assert [row[0] for row in stored(name)] == list(range(5, 25))


def test_a_lowered_history_leaves_no_hole(settings) -> None:
    name = channel()
    settings.EVENTS_HISTORY_PER_CHANNEL = 40
    send_events([{"channel": name, "data": n} for n in range(60)])
    assert len(stored(name)) == 40
    settings.EVENTS_HISTORY_PER_CHANNEL = 10
    send_events([{"channel": name, "data": n} for n in range(30)])  # seqs 61..90
    assert [row[0] for row in stored(name)] == list(range(81, 91))


def test_events_sent_without_their_trim_leave_no_hole(settings) -> None:
    """The events of a transaction whose last hook was rolled back with a savepoint go
    out without a trim (events/publish.py _CommitBatch): the channel's next trims take
    their share too."""
    settings.EVENTS_HISTORY_PER_CHANNEL = 20
    name = channel()
    for n in range(30):
        send_event(name, n)  # 1..30, trimmed to 11..30
    with transaction.atomic():
        for n in range(10):
            send_event(name, n)  # 31..40: sent at commit, not trimmed
        try:
            with transaction.atomic():
                send_event(name, "rolled back")
                raise RuntimeError
        except RuntimeError:
            pass
    broadcaster.flush()
    for n in range(30):
        send_event(name, n)  # 41..70
    assert [row[0] for row in stored(name)] == list(range(51, 71))


def test_a_list_whose_trim_fails_is_stored_and_the_next_trims(settings, trim_fails_once, caplog) -> None:
    from django.db import DatabaseError

    settings.EVENTS_HISTORY_PER_CHANNEL = 20
    name = channel()
    trim_fails_once(DatabaseError("canceling statement due to lock timeout"))
    events = send_events([{"channel": name, "data": n} for n in range(30)])
    assert [e.seq for e in events] == list(range(1, 31))
    assert len(stored(name)) == 30  # stored, untrimmed
    assert "trimming channel" in caplog.text
    send_events([{"channel": name, "data": n} for n in range(2)])
    assert [row[0] for row in stored(name)] == list(range(13, 33))


def test_history_is_trimmed_in_batches(settings) -> None:
    settings.EVENTS_HISTORY_PER_CHANNEL = 20
    name = channel()
    seen: list[list[int]] = []
    for n in range(25):
        send_event(name, n)
        seen.append([row[0] for row in stored(name)])
    # Nothing goes until the history is over 20 events ...
    assert seen[20] == list(range(1, 22))
    # ... then every second publish (a tenth of the history) trims back to the newest 20.
    assert seen[21] == list(range(3, 23))
    assert seen[22] == list(range(3, 24))
    assert seen[23] == list(range(5, 25))
    assert seen[24] == list(range(5, 26))


def test_a_connection_broken_by_a_redis_restart_is_retried_at_once(monkeypatch, caplog) -> None:
    """The publisher thread keeps its connection; after a Redis restart the first command
    on it fails. The batch goes out on the reconnect, and the breaker stays closed."""
    attempts = []
    real = broadcaster.send_batch

    async def stale_once(layer, batch):
        attempts.append(batch)
        if len(attempts) == 1:
            raise redis.exceptions.ConnectionError("Connection closed by server.")
        await real(layer, batch)

    monkeypatch.setattr(broadcaster, "send_batch", stale_once)
    name = channel()
    with GroupListener(name) as listener, caplog.at_level(logging.WARNING, logger="events"):
        first = send_event(name, {"n": 1})
        broadcaster.flush()
        later = send_event(name, {"n": 2})
        broadcaster.flush()
        received = listener.messages(count=2, timeout=ARRIVE)
    assert [m["seq"] for m in received] == [first.seq, later.seq]
    assert len(attempts) == 3
    assert not [r for r in caplog.records if r.name == "events.publish"], caplog.records
