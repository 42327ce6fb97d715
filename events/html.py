"""HTML over the stream: render a Django template and send it as a raw event.

htmx's SSE extension swaps an event's data into the page, and Turbo applies the
`<turbo-stream>` elements it contains, so the data must be the HTML itself, not JSON.
Templates autoescape as for any page; the fragment is then sent as is.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

import django
from channels.db import database_sync_to_async
from django.http import HttpRequest
from django.template import TemplateDoesNotExist
from django.template.loader import render_to_string

from events.positions import format_position
from events.publish import DEFAULT_EVENT_TYPE, asend_event, send_event

if TYPE_CHECKING:
    from events.models import Event

# "page.html#row" names a template partial ({% partialdef row %}) from Django 6.0 on.
PARTIALS = django.VERSION >= (6, 0)


def render_fragment(
    template_name: str, context: dict[str, Any] | None = None, request: HttpRequest | None = None
) -> str:
    """The rendered template (or partial), autoescaped; a missing one raises
    TemplateDoesNotExist, saying so when partials need a newer Django."""
    try:
        return render_to_string(template_name, context, request)
    except TemplateDoesNotExist as exc:
        if "#" in template_name and not PARTIALS:
            raise TemplateDoesNotExist(
                f"{template_name}: template partials ('page.html#name') need Django 6.0 or later "
                f"(this is Django {django.get_version()})"
            ) from exc
        raise


def send_html(
    channel: str,
    template_name: str,
    context: dict[str, Any] | None = None,
    *,
    event: str = DEFAULT_EVENT_TYPE,
    request: HttpRequest | None = None,
) -> Event:
    """Render `template_name` with `context` (and `request`, for context processors)
    and send the HTML as a raw event: what htmx's `sse-swap` and Turbo Streams expect.

    Raises ValueError as send_event does (nothing stored), TemplateDoesNotExist or a
    template's own errors while rendering.
    """
    html = render_fragment(template_name, context, request)
    return send_event(channel, html, event=event, raw=True)


async def asend_html(
    channel: str,
    template_name: str,
    context: dict[str, Any] | None = None,
    *,
    event: str = DEFAULT_EVENT_TYPE,
    request: HttpRequest | None = None,
) -> Event:
    """The async twin of send_html: the template renders in a worker thread (it may
    query), and the event is stored as asend_event stores it (shared commits)."""
    html = await database_sync_to_async(render_fragment)(template_name, context, request)
    return await asend_event(channel, html, event=event, raw=True)


def stream_position(channels: Iterable[str]) -> str:
    """The stream position of `channels` now, as an SSE id: a page that starts its
    stream from it (`?last_event_id=`) misses nothing published while it loads."""
    from events import store

    names = list(channels)
    return format_position(store.last_seqs(names), names)
