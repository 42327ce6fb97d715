"""The site's ASGI routing: the events app's SSE streams in front of Django.

Wired exactly as any project wires the app (README "Add to your Django project"):
`events.asgi.with_streams` sends GET /events/... to the SSE consumer and everything
else to Django.
"""

from __future__ import annotations

from typing import Any

from events.asgi import with_streams


def build_application(django_app: Any) -> Any:
    return with_streams(django_app)
