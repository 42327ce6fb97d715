"""Tests for events/cors.py: only listed origins get CORS headers."""

from __future__ import annotations

import pytest

from events.cors import is_allowed, preflight_headers, response_headers

ALLOWED = ["https://app.example.com", "http://localhost:8000"]
VARY = (b"Vary", b"Origin")
ALLOW_HEADERS = b"Authorization, Content-Type, X-CSRFToken, Last-Event-ID"
METHODS = "GET, POST, OPTIONS"

UNLISTED = [
    (None, "none"),
    ("", "empty"),
    ("https://evil.example.com", "other-host"),
    ("http://app.example.com", "other-scheme"),
    ("https://app.example.com:8443", "other-port"),
    ("https://APP.example.com", "other-case"),
    ("https://app.example.com/", "trailing-slash"),
    ("https://app.example.com.evil.com", "suffix-attack"),
    ("https://evil.com/https://app.example.com", "embedded"),
    ("null", "null-origin"),
    ("*", "star"),
    ("http://localhost", "localhost-without-port"),
]


def _ids(rows):
    return [row[-1] for row in rows]


@pytest.mark.parametrize(
    ("origin", "allowed", "expected"),
    [
        ("https://app.example.com", ALLOWED, True),
        ("http://localhost:8000", ALLOWED, True),
        ("https://app.example.com", tuple(ALLOWED), True),
        ("https://app.example.com", set(ALLOWED), True),
        ("https://app.example.com", iter(ALLOWED), True),
        ("https://app.example.com", [], False),
        (None, ALLOWED, False),
        ("", ["", *ALLOWED], False),
        ("https://x.example.com", ["*"], False),
        ("null", ["null"], True),
    ],
    ids=[
        "listed",
        "listed-second",
        "tuple",
        "set",
        "iterator",
        "nothing-allowed-by-default",
        "no-origin",
        "empty-origin-never",
        "no-wildcards",
        "null-only-when-listed",
    ],
)
def test_is_allowed(origin, allowed, expected):
    assert is_allowed(origin, allowed) is expected


@pytest.mark.parametrize("origin", ALLOWED, ids=["https", "localhost-port"])
def test_response_headers_listed_origin(origin):
    # Allowed, but not with credentials: that takes the separate list.
    assert response_headers(origin, ALLOWED) == [VARY, (b"Access-Control-Allow-Origin", origin.encode())]


@pytest.mark.parametrize("allowed", [ALLOWED, []], ids=["also-allowed", "only-credentialed"])
def test_response_headers_credentialed_origin(allowed):
    origin = ALLOWED[0]
    assert response_headers(origin, allowed, [origin]) == [
        VARY,
        (b"Access-Control-Allow-Origin", origin.encode()),
        (b"Access-Control-Allow-Credentials", b"true"),
    ]
    # Only the origins listed for credentials get them.
    other = ALLOWED[1]
    assert (b"Access-Control-Allow-Credentials", b"true") not in response_headers(other, ALLOWED, [origin])


@pytest.mark.parametrize(("origin", "_id"), UNLISTED, ids=_ids(UNLISTED))
def test_response_headers_unlisted_origin_gets_only_vary(origin, _id):
    assert response_headers(origin, ALLOWED) == [VARY]


@pytest.mark.parametrize("origin", [None, "https://app.example.com"], ids=["no-origin", "would-be-listed"])
def test_response_headers_default_allows_nothing(origin):
    assert response_headers(origin, []) == [VARY]


def test_response_headers_latin1_origin_echoed_exactly():
    # ASGI headers are bytes; the consumer decodes them as latin-1, so the echo re-encodes.
    origin = "https://caf\u00e9.example"
    assert response_headers(origin, [origin]) == [
        VARY,
        (b"Access-Control-Allow-Origin", b"https://caf\xe9.example"),
    ]


def test_headers_are_bytes_pairs():
    for headers in (
        response_headers(ALLOWED[0], ALLOWED),
        preflight_headers(ALLOWED[0], ALLOWED, METHODS),
        response_headers(None, ALLOWED),
    ):
        for name, value in headers:
            assert type(name) is bytes and type(value) is bytes


def test_never_a_wildcard_origin():
    for origin in [ALLOWED[0], "https://evil.example.com", None]:
        for headers in (response_headers(origin, ALLOWED), preflight_headers(origin, ALLOWED, METHODS)):
            assert (b"Access-Control-Allow-Origin", b"*") not in headers


def test_response_headers_fresh_list_each_call():
    first = response_headers(ALLOWED[0], ALLOWED)
    first.append((b"X-Mutated", b"1"))
    assert (b"X-Mutated", b"1") not in response_headers(ALLOWED[0], ALLOWED)


@pytest.mark.parametrize(
    "methods", ["GET, POST, OPTIONS", "POST, OPTIONS", "GET"], ids=["all", "publish", "get-only"]
)
def test_preflight_listed_origin(methods):
    origin = "https://app.example.com"
    assert preflight_headers(origin, ALLOWED, methods) == [
        VARY,
        (b"Access-Control-Allow-Origin", b"https://app.example.com"),
        (b"Access-Control-Allow-Methods", methods.encode()),
        (b"Access-Control-Allow-Headers", ALLOW_HEADERS),
        (b"Access-Control-Max-Age", b"600"),
    ]


def test_preflight_allows_the_headers_the_product_needs():
    allow = dict(preflight_headers(ALLOWED[0], ALLOWED, METHODS))[b"Access-Control-Allow-Headers"]
    names = {name.strip().lower() for name in allow.split(b",")}
    assert names == {b"authorization", b"content-type", b"x-csrftoken", b"last-event-id"}


@pytest.mark.parametrize(("origin", "_id"), UNLISTED, ids=_ids(UNLISTED))
def test_preflight_unlisted_origin_gets_only_vary(origin, _id):
    assert preflight_headers(origin, ALLOWED, METHODS) == [VARY]


@pytest.mark.parametrize(
    "allowed", [tuple(ALLOWED), set(ALLOWED), frozenset(ALLOWED)], ids=["tuple", "set", "frozenset"]
)
def test_preflight_accepts_any_reiterable(allowed):
    assert (
        dict(preflight_headers(ALLOWED[0], allowed, METHODS))[b"Access-Control-Allow-Methods"]
        == b"GET, POST, OPTIONS"
    )


def test_preflight_with_one_shot_iterator():
    headers = preflight_headers(ALLOWED[0], iter(ALLOWED), METHODS)
    assert (b"Access-Control-Allow-Methods", METHODS.encode()) in headers
