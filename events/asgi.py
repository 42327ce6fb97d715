"""The ASGI wrapper a project puts around its Django application, in asgi.py:

    application = with_streams(get_asgi_application())

GET (and HEAD) on /events/<channel>/ (the trailing slash optional) and /events/ (or
/events) are streams, held by the SSE consumer; everything else goes to Django. POST and
OPTIONS on the same paths reach the publish endpoint, a plain Django view (so that
sessions, CSRF and the admin's auth work as everywhere else in Django), through
events/publish_asgi.py, which runs Django's own handling of them in one thread hop
instead of the dozen of its ASGI handler; ASGI middleware wrapped around the Django
application passed in is not on that path.

A body over its limit (events/bodies.py) is answered 413 before anything reads it.

This module imports nothing that needs Django's apps at import time, so that the import
may stand at the top of asgi.py, before get_asgi_application() sets Django up.
"""

from __future__ import annotations

from collections.abc import Awaitable
from typing import Any

from events.transport import SERVER_SEND_KEY, buffered_body

PUBLISH_METHODS = frozenset({"POST", "OPTIONS"})
STREAM_PREFIX = "/events/"
# The multi-channel stream without its slash (a stream too: events/bodies.py
# stream_request): Django would answer it with a redirect that carries no CORS
# headers, which a cross-origin EventSource cannot follow.
STREAM_ROOT = "/events"
# Set on the application with_streams() returns: `manage.py check` looks for it
# (events/checks.py) to tell a project that serves streams from one that does not.
MARK = "events_streams"


def body_refusal(scope: dict[str, Any], send: Any) -> str | None:
    """Why the request's body is refused (413), or None. Under daphne, a refused body
    is also skipped: daphne then hands the application an empty one."""
    from events import bodies

    headers = scope.get("headers") or []
    length, chunked = bodies.declared_length(headers)
    content_type = dict(headers).get(b"content-type", b"").decode("latin-1").lower()
    buffered = buffered_body(send)
    # Under daphne the body is all there: its real size counts, whatever was declared.
    size = buffered.seek(0, 2) if buffered is not None else length
    reason = bodies.refusal(
        scope.get("method", ""), scope.get("path", ""), content_type, size, chunked, STREAM_PREFIX
    )
    if buffered is not None and reason is None:
        buffered.seek(0)  # where daphne reads it from
    return reason


async def _refuse(scope: dict[str, Any], send: Any, reason: str) -> None:
    from events import rejection

    headers = rejection.headers(rejection.request_origin(scope.get("headers")))
    await send({"type": "http.response.start", "status": 413, "headers": headers})
    await send({"type": "http.response.body", "body": rejection.body(reason)})


def with_streams(django_app: Any) -> Any:
    """The project's ASGI application with the SSE streams in front of it."""
    from channels.routing import ProtocolTypeRouter
    from django.conf import settings

    from events.bodies import stream_request
    from events.consumers import EventStreamConsumer
    from events.publish_asgi import PublishHandler

    if settings.DEBUG and "django.contrib.staticfiles" in settings.INSTALLED_APPS:
        # What `runserver` does in development: the feed page's JS and CSS are found in
        # the apps. Under plain daphne nothing would serve them otherwise; in production
        # a proxy or whitenoise does (README "Deployment").
        from django.contrib.staticfiles.handlers import ASGIStaticFilesHandler

        django_app = ASGIStaticFilesHandler(django_app)

    # No session middleware: the read policy loads the session and the user only when a
    # channel needs them (events/policy.py, with_session), not on every connect.
    publish = PublishHandler()

    # Plain functions returning the handler's coroutine rather than coroutine functions
    # awaiting it: an open stream then keeps no frame of theirs alive for its lifetime
    # (memory per stream: README "Benchmark").
    def http(scope: dict[str, Any], receive: Any, send: Any) -> Awaitable[None]:
        path: str = scope.get("path", "")
        if stream_request(scope.get("method", ""), path, STREAM_PREFIX):
            # Whatever follows the prefix, less one trailing slash, is the channel; the
            # consumer validates it (a bad name is a 400, never a routing 500 or 405).
            channel = path[len(STREAM_PREFIX) :].removesuffix("/") if path != STREAM_ROOT else ""
            # Added to the server's scope, not to a copy of it: this application is the
            # stream's only reader of it, and a copy would be kept for the stream's life.
            scope["url_route"] = {"args": (), "kwargs": {"channel": channel}}
            # The server's own send, to measure what queues for a slow client.
            scope[SERVER_SEND_KEY] = send
            stream: Awaitable[None] = EventStreamConsumer()(scope, receive, send)
            return stream
        if scope.get("method") in PUBLISH_METHODS and path.startswith(STREAM_PREFIX):
            published: Awaitable[None] = publish(scope, receive, send)
            return published
        answered: Awaitable[None] = django_app(scope, receive, send)
        return answered

    setattr(http, "_asgi_single_callable", True)  # noqa: B010 (see below)
    router = ProtocolTypeRouter({"http": http})

    def application(scope: dict[str, Any], receive: Any, send: Any) -> Any:
        # A plain function returning the coroutine, not a coroutine function: daphne
        # calls it before copying the body into the queue (events/transport.py buffered_body), so the
        # check runs in time to skip that copy.
        if scope.get("type") == "http":
            reason = body_refusal(scope, send)
            if reason is not None:
                return _refuse(scope, send, reason)
            return http(scope, receive, send)
        return router(scope, receive, send)

    # ASGI 3 (one call with scope, receive, send), which servers would otherwise not
    # assume of a function that is not a coroutine function.
    setattr(application, "_asgi_single_callable", True)  # noqa: B010
    setattr(application, "app", router)  # noqa: B010
    setattr(application, MARK, True)
    return application


def is_wrapped(application: Any) -> bool:
    """Whether `application` is, or wraps, what with_streams() returned. Middleware
    usually keeps the inner application as `.app`, `.application` or `.inner`."""
    seen: set[int] = set()
    while application is not None and id(application) not in seen:
        if getattr(application, MARK, False):
            return True
        seen.add(id(application))
        application = next(
            (
                getattr(application, name)
                for name in ("app", "application", "inner")
                if getattr(application, name, None) is not None
            ),
            None,
        )
    return False
