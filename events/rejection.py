"""A refused request, and its answer: a JSON error body and the headers every refusal
carries, for the streams, the views and the ASGI router alike."""

from __future__ import annotations

import json
from collections.abc import Iterable

from events import cors

Headers = list[tuple[bytes, bytes]]
JSON = b"application/json"


class Rejection(Exception):
    """Why a request is refused: its status, the reason given to the client, and for a
    refusal that lifts by itself, the seconds the client should wait."""

    def __init__(self, status: int, reason: str, retry_after: int | None = None) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason
        self.retry_after = retry_after

    def __repr__(self) -> str:
        return f"Rejection({self.status}, {self.reason!r}, retry_after={self.retry_after})"


def payload(reason: str) -> dict[str, str]:
    """The shape of every error body: `{"error": "<reason>"}`."""
    return {"error": reason}


def body(reason: str) -> bytes:
    return json.dumps(payload(reason)).encode()


def headers(origin: str | None, retry_after: int | None = None) -> Headers:
    """The headers of a refusal outside Django's views (the views get theirs from
    Django's middleware and views._with_cors)."""
    return [
        *([(b"Retry-After", str(retry_after).encode())] if retry_after is not None else []),
        (b"Content-Type", JSON),
        # As Django's SecurityMiddleware adds to its pages (the stream itself needs
        # none: text/event-stream is never sniffed into something runnable).
        (b"X-Content-Type-Options", b"nosniff"),
        *cors.headers_for(origin),
    ]


def request_origin(raw_headers: Iterable[tuple[bytes, bytes]] | None) -> str | None:
    """The Origin header of an ASGI scope's header list, decoded, or None."""
    for name, value in raw_headers or ():
        if name.lower() == b"origin":
            return value.decode("latin-1")
    return None
