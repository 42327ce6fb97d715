"""Live Server-Sent Events for Django: `from events import send_event, asend_event`.

The names are loaded on first use, so that `events.layers` (in settings.py) and
`events.asgi` (at the top of asgi.py) can be imported before Django is set up.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from events.publish import asend_event, send_event

__all__ = ["asend_event", "send_event"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from events import publish

        return getattr(publish, name)
    raise AttributeError(f"module 'events' has no attribute {name!r}")
