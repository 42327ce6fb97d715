"""Live Server-Sent Events for Django: `from events import send_event, asend_event`."""

from __future__ import annotations

from events.publish import asend_event, send_event

__all__ = ["asend_event", "send_event"]
