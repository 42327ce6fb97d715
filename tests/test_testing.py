"""events.testing: capturing sent events, the SSE parser, and the two stream clients."""

from __future__ import annotations

import json

import pytest
from django.db import transaction
from django.test import Client

from demo.models import Order
from events import asend_event, send_event, sse
from events.hub import running_hub
from events.testing import EventOutbox, SSEEvent, SSEParser, asgi_stream, capture_events, connect, parse_sse
from tests.layer_probe import GroupListener
from tests.servers import Daphne
from tests.streams import channel


def sent(outbox: list) -> list[tuple[str, str, object]]:
    return [(event.channel, event.type, event.payload) for event in outbox]


# -- capturing ------------------------------------------------------------------------


@pytest.mark.django_db
def test_capture_events_collects_what_is_sent_in_the_block() -> None:
    a, b = channel(), channel()
    send_event(a, "before")
    with capture_events() as outbox:
        first = send_event(a, {"n": 1}, event="one")
        send_event(b, [2], event="two")
    send_event(a, "after")
    assert isinstance(outbox, EventOutbox)
    assert sent(outbox) == [(a, "one", {"n": 1}), (b, "two", [2])]
    assert outbox[0].pk == first.pk and outbox[0].sse_id == f"{a}:2"
    assert sent(outbox.filter(channel=b)) == [(b, "two", [2])]
    assert sent(outbox.filter(type="one")) == [(a, "one", {"n": 1})]
    assert outbox.filter(channel=a, type="two") == []


@pytest.mark.django_db
def test_captures_nest() -> None:
    a = channel()
    with capture_events() as outer:
        send_event(a, 1)
        with capture_events() as inner:
            send_event(a, 2)
        send_event(a, 3)
    assert [e.payload for e in outer] == [1, 2, 3]
    assert [e.payload for e in inner] == [2]


@pytest.mark.django_db
def test_rejected_events_are_not_captured() -> None:
    with capture_events() as outbox, pytest.raises(ValueError):
        send_event("bad name", 1)
    assert outbox == []


@pytest.mark.django_db(transaction=True)
def test_events_are_captured_when_stored_even_if_the_transaction_rolls_back() -> None:
    """As documented: capture happens at send time; the broadcast (on commit) never does."""
    a = channel()
    with GroupListener(a) as listener, capture_events() as outbox:
        with pytest.raises(RuntimeError), transaction.atomic():
            send_event(a, {"n": 1})
            raise RuntimeError("rolled back")
        assert listener.messages(timeout=0.5) == []
    assert sent(outbox) == [(a, "message", {"n": 1})]


@pytest.mark.django_db(transaction=True)
async def test_async_sends_are_captured() -> None:
    a = channel()
    with capture_events() as outbox:
        await asend_event(a, {"async": True}, event="twin")
    assert sent(outbox) == [(a, "twin", {"async": True})]


@pytest.mark.django_db
def test_fixture_captures_a_signal(sent_events: EventOutbox) -> None:
    order = Order.objects.create(customer="Ada")
    [event] = sent_events.filter(channel="orders")
    assert event.type == "order.created"
    assert event.payload["pk"] == order.pk
    assert event.payload["action"] == "created"


@pytest.mark.django_db
def test_fixture_captures_an_admin_action(admin_client: Client, sent_events: EventOutbox) -> None:
    order = Order.objects.create(customer="Bo", status=Order.Status.PAID)
    sent_events.clear()
    response = admin_client.post(
        "/admin/demo/order/", {"action": "broadcast_order_status", "_selected_action": [order.pk]}
    )
    assert response.status_code == 302
    assert sent(sent_events) == [
        ("orders", "order-status", {"id": order.pk, "customer": "Bo", "status": "paid"})
    ]


def test_fixture_starts_empty_and_stops_capturing(sent_events: EventOutbox) -> None:
    from events.signals import event_stored

    assert sent_events == []
    # The fixture is a receiver of event_stored while the test runs, and only then
    # (test_a_capture_stops_listening_when_it_ends).
    assert event_stored.has_listeners()


@pytest.mark.django_db
def test_a_capture_stops_listening_when_it_ends() -> None:
    from events.signals import event_stored

    before = len(event_stored.receivers)
    with capture_events() as outbox:
        assert len(event_stored.receivers) == before + 1
    assert len(event_stored.receivers) == before
    send_event(channel(), "after the block")
    assert outbox == []


# -- parsing ----------------------------------------------------------------------------


def ev(data: str, type: str = "message", id: str = "") -> SSEEvent:
    return SSEEvent(type=type, data=data, id=id)


PARSE_CASES = [
    (b"data: hi\n\n", [ev("hi")]),
    (b"data: hi\r\n\r\n", [ev("hi")]),
    (b"data: hi\r\r", [ev("hi")]),
    (b"event: paid\ndata: {}\nid: orders:1\n\n", [ev("{}", "paid", "orders:1")]),
    (b"data: a\ndata: b\n\n", [ev("a\nb")]),
    (b"data\n\n", [ev("")]),
    (b"data:  two spaces\n\n", [ev(" two spaces")]),
    (b"data:nospace\n\n", [ev("nospace")]),
    (b": comment\n\n", []),
    (b"id: x:1\n\n", []),
    (b"data: unfinished\n", []),
    (b"\xef\xbb\xbfdata: bom\n\n", [ev("bom")]),
    (b"data: \xc3\xa9\xe2\x82\xac\n\n", [ev("é€")]),
    (b"id: a:1\ndata: 1\n\ndata: 2\n\n", [ev("1", id="a:1"), ev("2", id="a:1")]),
    (b"id: a\x00b\ndata: 1\n\n", [ev("1")]),
    (b"id\ndata: 1\n\n", [ev("1")]),
    (b"event: x\n\ndata: 1\n\n", [ev("1")]),
    (b"unknown: field\ndata: 1\n\n", [ev("1")]),
    (b"retry: 1000\ndata: 1\n\n", [ev("1")]),
]


@pytest.mark.parametrize(
    ("raw", "expected"),
    PARSE_CASES,
    ids=[
        "lf",
        "crlf",
        "cr",
        "all-fields",
        "multi-line-data",
        "data-without-colon",
        "one-space-stripped",
        "no-space",
        "comment-only",
        "id-only-no-event",
        "unfinished-event-dropped",
        "bom",
        "utf-8",
        "id-persists",
        "nul-in-id-ignored",
        "empty-id-resets",
        "type-without-data-discarded",
        "unknown-field",
        "retry",
    ],
)
def test_parse_sse(raw: bytes, expected: list[SSEEvent]) -> None:
    assert parse_sse(raw) == expected


def test_parser_keeps_stream_state() -> None:
    parser = SSEParser()
    assert parser.feed(b"retry: 2500\n\n:ok\n\nid: a:3\n\n:\n\n") == []
    assert (parser.retry, parser.last_event_id, parser.comments) == (2500, "a:3", 2)
    parser.feed(b"retry: soon\n\n")
    assert parser.retry == 2500  # not digits: ignored


STREAM = (
    "retry: 3000\r\n\r\n:ok\n\nid: a:1,b:0\n\n"
    'id: a:2,b:0\nevent: order-paid\ndata: {"id":42,"name":"Zoë"}\n\n'
    "id: a:2,b:1\r\ndata: line one\r\ndata: line two\r\n\r\n"
    ":\r\r"
    "id: a:3,b:1\revent: x\rdata: é\r\r"
).encode()
STREAM_EVENTS = [
    ev('{"id":42,"name":"Zoë"}', "order-paid", "a:2,b:0"),
    ev("line one\nline two", "message", "a:2,b:1"),
    ev("é", "x", "a:3,b:1"),
]


def test_parser_gives_the_same_events_whatever_the_chunking() -> None:
    """Split points inside a CRLF and inside a UTF-8 character included."""
    assert parse_sse(STREAM) == STREAM_EVENTS
    for at in range(1, len(STREAM)):
        parser = SSEParser()
        assert parser.feed(STREAM[:at]) + parser.feed(STREAM[at:]) == STREAM_EVENTS, at
    parser = SSEParser()
    assert [e for i in range(len(STREAM)) for e in parser.feed(STREAM[i : i + 1])] == STREAM_EVENTS


@pytest.mark.parametrize("data", ["{}", '"a\\nb"', "line\nbreak", "cr\rlf\r\n", " leading", ""], ids=repr)
def test_parser_reads_back_what_the_server_writes(data: str) -> None:
    wire = sse.id_line("c:7") + sse.event_body(data, "t") + sse.HEARTBEAT
    expected = data.replace("\r\n", "\n").replace("\r", "\n")
    assert parse_sse(wire) == [ev(expected, "t", "c:7")]


def test_parsed_json() -> None:
    [event] = parse_sse(b'data: {"a": [1, 2]}\n\n')
    assert event.json() == {"a": [1, 2]}


# -- the clients --------------------------------------------------------------------------


@pytest.mark.e2e
def test_connect_reads_events_from_a_running_server(daphne: Daphne) -> None:
    a = channel()
    with connect(f"{daphne.url}/events/{a}/") as stream:
        assert stream.status == 200
        assert stream.headers["content-type"] == "text/event-stream"
        assert stream.last_event_id == f"{a}:0"  # subscribed: what is sent now arrives
        send_event(a, {"n": 1}, event="first")
        send_event(a, "two")
        events = stream.events(2, timeout=5)
        with pytest.raises(TimeoutError):
            stream.next_event(timeout=0.3)
    assert events == [ev('{"n":1}', "first", f"{a}:1"), ev('"two"', "message", f"{a}:2")]
    assert events[0].json() == {"n": 1}

    # Resuming from the first id replays the second event.
    with connect(f"{daphne.url}/events/{a}/", last_event_id=f"{a}:1") as stream:
        assert stream.next_event(timeout=5) == ev('"two"', "message", f"{a}:2")


@pytest.mark.e2e
def test_connect_returns_a_rejection(daphne: Daphne) -> None:
    with connect(f"{daphne.url}/events/bad%20name/") as stream:
        assert stream.status == 400
        assert "error" in json.loads(stream.body)
        with pytest.raises(EOFError):
            stream.next_event(timeout=1)


@pytest.mark.e2e
def test_connect_notices_the_end_of_the_stream(server_env) -> None:
    server = Daphne(server_env).start()
    try:
        with connect(f"{server.url}/events/{channel()}/") as stream:
            server.kill()
            with pytest.raises(EOFError):
                stream.next_event(timeout=5)
    finally:
        server.stop()


@pytest.mark.django_db(transaction=True)
async def test_asgi_stream_in_process() -> None:
    a = channel()
    async with asgi_stream(f"/events/{a}/") as stream:
        assert stream.status == 200
        assert stream.last_event_id == f"{a}:0"
        await asend_event(a, {"in": "process"}, event="local")
        event = await stream.next_event(timeout=5)
    assert event == ev('{"in":"process"}', "local", f"{a}:1")
    # The last stream closed, so the loop's hub was stopped: no task outlives the test.
    assert running_hub() is None


@pytest.mark.django_db(transaction=True)
async def test_asgi_stream_multi_channel_and_resume() -> None:
    a, b = channel(), channel()
    await asend_event(a, 1)
    await asend_event(b, 2)
    async with asgi_stream(
        "/events/", query=f"channel={a}&channel={b}", last_event_id=f"{a}:0,{b}:0"
    ) as stream:
        events = await stream.events(2, timeout=5)
    assert [(e.id, e.data) for e in events] == [(f"{a}:1,{b}:0", "1"), (f"{a}:1,{b}:1", "2")]


@pytest.mark.django_db(transaction=True)
async def test_asgi_stream_rejection() -> None:
    async with asgi_stream("/events/private-ops/") as stream:
        assert stream.status == 403
        assert "private-ops" in json.loads(stream.body)["error"]
        with pytest.raises(EOFError):
            await stream.next_event(timeout=1)
