"""ASGI routing: SSE streams go to the consumer, everything else to Django.

GET (and HEAD) on /events/<channel>/ (the trailing slash optional) and /events/ are
streams; POST and OPTIONS on the same paths reach the publish endpoint, a plain Django
view, so that sessions, CSRF and the admin's auth work as everywhere else in Django.
"""

from __future__ import annotations

from typing import Any

from channels.routing import ProtocolTypeRouter

from events.backpressure import SERVER_SEND_KEY
from events.consumers import EventStreamConsumer

STREAM_METHODS = frozenset({"GET", "HEAD"})
STREAM_PREFIX = "/events/"


def build_application(django_app: Any) -> Any:
    # No session middleware: the read policy loads the session and the user only when a
    # channel needs them (events/policy.py, with_session), not on every connect.
    streams = EventStreamConsumer.as_asgi()

    async def http(scope: dict[str, Any], receive: Any, send: Any) -> None:
        path: str = scope.get("path", "")
        if scope.get("method") in STREAM_METHODS and path.startswith(STREAM_PREFIX):
            # Whatever follows the prefix, less one trailing slash, is the channel; the
            # consumer validates it (a bad name is a 400, never a routing 500 or 405).
            channel = path[len(STREAM_PREFIX) :].removesuffix("/")
            scope = {
                **scope,
                "url_route": {"args": (), "kwargs": {"channel": channel}},
                # The server's own send, to measure what queues for a slow client.
                SERVER_SEND_KEY: send,
            }
            await streams(scope, receive, send)
        else:
            await django_app(scope, receive, send)

    return ProtocolTypeRouter({"http": http})
