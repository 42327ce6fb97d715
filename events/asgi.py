"""The ASGI wrapper a project puts around its Django application, in asgi.py:

    application = with_streams(get_asgi_application())

GET (and HEAD) on /events/<channel>/ (the trailing slash optional) and /events/ (or
/events) are streams, held by the SSE consumer; everything else, POST and OPTIONS on the same paths
included (the publish endpoint, a plain Django view, so that sessions, CSRF and the
admin's auth work as everywhere else in Django), goes to the Django application.

This module imports nothing that needs Django's apps at import time, so that the import
may stand at the top of asgi.py, before get_asgi_application() sets Django up.
"""

from __future__ import annotations

from typing import Any

STREAM_METHODS = frozenset({"GET", "HEAD"})
STREAM_PREFIX = "/events/"
# The multi-channel stream without its slash: Django would answer it with a redirect
# that carries no CORS headers, which a cross-origin EventSource cannot follow.
STREAM_ROOT = "/events"
# Set on the application with_streams() returns: `manage.py check` looks for it
# (events/checks.py) to tell a project that serves streams from one that does not.
MARK = "events_streams"


def with_streams(django_app: Any) -> Any:
    """The project's ASGI application with the SSE streams in front of it."""
    from channels.routing import ProtocolTypeRouter
    from django.conf import settings

    from events.backpressure import SERVER_SEND_KEY
    from events.consumers import EventStreamConsumer

    if settings.DEBUG and "django.contrib.staticfiles" in settings.INSTALLED_APPS:
        # What `runserver` does in development: the feed page's JS and CSS are found in
        # the apps. Under plain daphne nothing would serve them otherwise; in production
        # a proxy or whitenoise does (README "Deployment").
        from django.contrib.staticfiles.handlers import ASGIStaticFilesHandler

        django_app = ASGIStaticFilesHandler(django_app)

    # No session middleware: the read policy loads the session and the user only when a
    # channel needs them (events/policy.py, with_session), not on every connect.
    streams = EventStreamConsumer.as_asgi()

    async def http(scope: dict[str, Any], receive: Any, send: Any) -> None:
        path: str = scope.get("path", "")
        if scope.get("method") in STREAM_METHODS and (path.startswith(STREAM_PREFIX) or path == STREAM_ROOT):
            # Whatever follows the prefix, less one trailing slash, is the channel; the
            # consumer validates it (a bad name is a 400, never a routing 500 or 405).
            channel = path[len(STREAM_PREFIX) :].removesuffix("/") if path != STREAM_ROOT else ""
            scope = {
                **scope,
                "url_route": {"args": (), "kwargs": {"channel": channel}},
                # The server's own send, to measure what queues for a slow client.
                SERVER_SEND_KEY: send,
            }
            await streams(scope, receive, send)
        else:
            await django_app(scope, receive, send)

    application = ProtocolTypeRouter({"http": http})
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
