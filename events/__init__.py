"""Live Server-Sent Events for Django: `from events import send_event, asend_event`,
`send_events, asend_events` for many at once, and for HTML fragments (htmx, Turbo)
`send_html, asend_html`.

The names are loaded on first use, so that `events.layers` (in settings.py) and
`events.asgi` (at the top of asgi.py) can be imported before Django is set up.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from events.html import asend_html, send_html
    from events.publish import asend_event, asend_events, send_event, send_events

__all__ = ["asend_event", "asend_events", "asend_html", "send_event", "send_events", "send_html"]
_HTML = frozenset({"asend_html", "send_html"})


def __getattr__(name: str) -> Any:
    if name in _HTML:
        from events import html

        return getattr(html, name)
    if name in __all__:
        from events import publish

        return getattr(publish, name)
    raise AttributeError(f"module 'events' has no attribute {name!r}")
