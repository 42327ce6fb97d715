"""Request bodies over their limit are refused before the application reads them."""

from __future__ import annotations

import json

import pytest
from channels.testing import ApplicationCommunicator
from django.core.asgi import get_asgi_application

from events import bodies
from events.consumers import EventStreamConsumer
from routing import build_application
from tests.streams import Stream, http_scope

PREFIX = "/events/"


def test_a_stream_takes_no_body() -> None:
    assert bodies.refusal("GET", "/events/a/", "", 0, False, PREFIX) is None
    assert bodies.refusal("GET", "/events/a/", "", 1, False, PREFIX) == "a stream request has no body"
    assert bodies.refusal("HEAD", "/events/", "", None, True, PREFIX) == "a stream request has no body"
    assert bodies.refusal("GET", "/events/a/", "", None, False, PREFIX) is None


def test_streams_are_the_paths_the_asgi_wrapper_routes_to_them() -> None:
    # /events without its slash is the multi-channel stream (events/asgi.py): it takes
    # no body either, rather than Django's limit.
    assert bodies.stream_request("GET", "/events", PREFIX)
    assert bodies.stream_request("HEAD", "/events/a/", PREFIX)
    assert not bodies.stream_request("GET", "/eventsx", PREFIX)
    assert not bodies.stream_request("POST", "/events", PREFIX)
    assert bodies.refusal("GET", "/events", "", 1, False, PREFIX) == "a stream request has no body"


def test_a_publish_body_is_limited_by_the_payload_limit(settings) -> None:
    settings.EVENTS_MAX_PAYLOAD_BYTES = 1000
    limit = 2 * 1000 + bodies.ENVELOPE_BYTES
    assert bodies.refusal("POST", "/events/a/", "application/json", limit, False, PREFIX) is None
    reason = bodies.refusal("POST", "/events/a/", "application/json", limit + 1, False, PREFIX)
    assert reason == f"the body is {limit + 1} bytes; at most {limit} are accepted here"


def test_other_bodies_follow_djangos_limit_except_uploads(settings) -> None:
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 5000
    assert bodies.refusal("POST", "/admin/login/", "application/x-www-form-urlencoded", 5001, False, PREFIX)
    assert (
        bodies.refusal("POST", "/admin/login/", "application/x-www-form-urlencoded", 5000, False, PREFIX)
        is None
    )
    assert (
        bodies.refusal("POST", "/admin/x/", "multipart/form-data; boundary=x", 10**9, False, PREFIX) is None
    )
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = None
    assert bodies.refusal("POST", "/admin/login/", "text/plain", 10**9, False, PREFIX) is None


def test_declared_length() -> None:
    assert bodies.declared_length([(b"content-length", b"12")]) == (12, False)
    assert bodies.declared_length([(b"content-length", b"x")]) == (None, False)
    assert bodies.declared_length([(b"transfer-encoding", b"chunked")]) == (None, True)


@pytest.mark.parametrize(
    ("method", "path", "reason"),
    [
        ("POST", "/events/orders/", "the body is 300000000 bytes; at most 132096 are accepted here"),
        ("GET", "/events/orders/", "a stream request has no body"),
        ("GET", "/events", "a stream request has no body"),
    ],
)
async def test_routing_answers_413_json_by_declared_length(method, path, reason) -> None:
    app = build_application(get_asgi_application())
    stream = Stream(app, path, method=method, headers=[(b"content-length", b"300000000")])
    await stream.open()
    assert stream.status == 413
    assert stream.headers[b"content-type"] == b"application/json"
    assert json.loads(await stream.body()) == {"error": reason}


async def test_a_stream_body_that_arrives_anyway_is_413() -> None:
    # Under a server that streams a chunked body, the consumer sees it: refused too.
    communicator = ApplicationCommunicator(EventStreamConsumer.as_asgi(), http_scope("/events/orders/"))
    await communicator.send_input({"type": "http.request", "body": b"x" * 10, "more_body": True})
    start = await communicator.receive_output(5)
    assert start["status"] == 413
    body = await communicator.receive_output(5)
    assert json.loads(body["body"]) == {"error": "a stream request has no body"}
    await communicator.wait(5)
