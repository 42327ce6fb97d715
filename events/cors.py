"""CORS for the stream and the publish endpoint (SPEC 4.5). Pure functions.

Only the request's Origin header is considered (never Referer): an origin listed in
EVENTS_ALLOWED_ORIGINS is echoed exactly, with credentials allowed; any other origin
gets no CORS headers at all, so the browser withholds the response.
"""

from __future__ import annotations

from collections.abc import Iterable

Headers = list[tuple[bytes, bytes]]


def is_allowed(origin: str | None, allowed: Iterable[str]) -> bool:
    return bool(origin) and origin in set(allowed)


def response_headers(origin: str | None, allowed: Iterable[str]) -> Headers:
    """Headers for an actual response. Vary: Origin always, as the answer depends on it."""
    headers: Headers = [(b"Vary", b"Origin")]
    if origin and is_allowed(origin, allowed):
        headers += [
            (b"Access-Control-Allow-Origin", origin.encode("latin-1")),
            (b"Access-Control-Allow-Credentials", b"true"),
        ]
    return headers


def preflight_headers(origin: str | None, allowed: Iterable[str], methods: str) -> Headers:
    allowed = list(allowed)  # read twice below
    headers = response_headers(origin, allowed)
    if origin and is_allowed(origin, allowed):
        headers += [
            (b"Access-Control-Allow-Methods", methods.encode()),
            (b"Access-Control-Allow-Headers", b"Authorization, Content-Type, X-CSRFToken, Last-Event-ID"),
            (b"Access-Control-Max-Age", b"600"),
        ]
    return headers
