"""One refusal, one JSON body and one set of headers: the stream's refusals, the views'
errors and the ASGI wrapper's 413 all answer alike."""

from __future__ import annotations

import json

from django.http import HttpRequest

from events import rejection, views
from events.asgi import _refuse
from events.rejection import Rejection

ORIGIN = "https://app.example.com"
CREDENTIALED = [
    (b"Access-Control-Allow-Origin", ORIGIN.encode()),
    (b"Access-Control-Allow-Credentials", b"true"),
]


def test_body_is_the_error_json() -> None:
    assert json.loads(rejection.body("no \u00e9")) == {"error": "no \u00e9"}
    assert json.loads(views.error(400, "no").content) == json.loads(rejection.body("no"))


def test_headers() -> None:
    assert rejection.headers(None) == [
        (b"Content-Type", b"application/json"),
        (b"X-Content-Type-Options", b"nosniff"),
        (b"Vary", b"Origin"),
    ]
    assert rejection.headers(None, retry_after=10)[0] == (b"Retry-After", b"10")


def test_credentialed_origins_get_their_cors_headers(settings) -> None:
    settings.EVENTS_CREDENTIALED_ORIGINS = [ORIGIN]
    assert rejection.headers(ORIGIN)[-2:] == CREDENTIALED


def test_rejection_carries_status_reason_and_retry_after() -> None:
    refusal = Rejection(429, "slow down", retry_after=1)
    assert (refusal.status, refusal.reason, refusal.retry_after, str(refusal)) == (
        429,
        "slow down",
        1,
        "slow down",
    )


def test_request_origin() -> None:
    assert rejection.request_origin([(b"Origin", b"https://caf\xe9.example")]) == "https://caf\u00e9.example"
    assert rejection.request_origin([(b"host", b"x")]) is None
    assert rejection.request_origin(None) is None


async def test_the_asgi_413_has_the_credentialed_cors_headers(settings) -> None:
    # It had only the uncredentialed list's: a credentialed page could not read why.
    settings.EVENTS_CREDENTIALED_ORIGINS = [ORIGIN]
    sent: list[dict] = []

    async def send(message: dict) -> None:
        sent.append(message)

    await _refuse({"headers": [(b"origin", ORIGIN.encode())]}, send, "too big")
    assert sent[0]["status"] == 413
    assert sent[0]["headers"] == rejection.headers(ORIGIN)
    assert all(header in sent[0]["headers"] for header in CREDENTIALED)
    assert json.loads(sent[1]["body"]) == {"error": "too big"}


def test_the_views_cors_headers_come_from_the_same_place(settings) -> None:
    settings.EVENTS_CREDENTIALED_ORIGINS = [ORIGIN]
    request = HttpRequest()
    request.META["HTTP_ORIGIN"] = ORIGIN
    response = views._with_cors(request, views.error(400, "no"))
    assert response["Access-Control-Allow-Origin"] == ORIGIN
    assert response["Access-Control-Allow-Credentials"] == "true"
