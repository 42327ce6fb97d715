"""CORS for the stream and the publish endpoint (README: "Security model").

Only the request's Origin header is considered (never Referer). An origin listed in
EVENTS_ALLOWED_ORIGINS is echoed exactly, without credentials: it may read streams with
a subscribe token and publish with the bearer token. One listed in
EVENTS_CREDENTIALED_ORIGINS is echoed with credentials allowed too: its pages may send
this site's cookies, so they act with the user's session. Any other origin gets no CORS
headers at all, so the browser withholds the response.

headers_for() and preflight_for() apply the EVENTS_* settings; every response of the
product (stream, refusal, view) takes its CORS headers from them.
"""

from __future__ import annotations

from collections.abc import Iterable

from events.conf import conf

Headers = list[tuple[bytes, bytes]]


def is_allowed(origin: str | None, allowed: Iterable[str]) -> bool:
    return bool(origin) and origin in set(allowed)


def response_headers(origin: str | None, allowed: Iterable[str], credentialed: Iterable[str] = ()) -> Headers:
    """Headers for an actual response. Vary: Origin always, as the answer depends on it."""
    headers: Headers = [(b"Vary", b"Origin")]
    with_credentials = is_allowed(origin, credentialed)
    if origin and (with_credentials or is_allowed(origin, allowed)):
        headers.append((b"Access-Control-Allow-Origin", origin.encode("latin-1")))
        if with_credentials:
            headers.append((b"Access-Control-Allow-Credentials", b"true"))
    return headers


def preflight_headers(
    origin: str | None, allowed: Iterable[str], methods: str, credentialed: Iterable[str] = ()
) -> Headers:
    headers = response_headers(origin, allowed, credentialed)
    if len(headers) > 1:  # the origin is allowed
        headers += [
            (b"Access-Control-Allow-Methods", methods.encode()),
            (b"Access-Control-Allow-Headers", b"Authorization, Content-Type, X-CSRFToken, Last-Event-ID"),
            (b"Access-Control-Max-Age", b"600"),
        ]
    return headers


def headers_for(origin: str | None) -> Headers:
    """response_headers() with the configured origins, the credentialed ones included."""
    return response_headers(origin, conf.allowed_origins, conf.credentialed_origins)


def preflight_for(origin: str | None, methods: str) -> Headers:
    return preflight_headers(origin, conf.allowed_origins, methods, conf.credentialed_origins)
