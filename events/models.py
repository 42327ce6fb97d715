from __future__ import annotations

import json
from typing import Any

from django.db import models
from django.utils import timezone

from events.names import CHANNEL_MAX, EVENT_TYPE_MAX


class Channel(models.Model):
    """A channel's sequence counter: the last `seq` handed out to one of its events.

    Publishers bump it with an upsert inside the transaction that stores the event, so
    the row lock orders the commits of one channel (see events/store.py).
    """

    name = models.CharField(max_length=CHANNEL_MAX, primary_key=True)
    last_seq = models.BigIntegerField(default=0)

    def __str__(self) -> str:
        return self.name


class Event(models.Model):
    """One published event. `channel` + `seq` is its SSE id, the position resume uses."""

    channel = models.CharField(max_length=CHANNEL_MAX)
    seq = models.BigIntegerField(editable=False)
    type = models.CharField("type", max_length=EVENT_TYPE_MAX, default="message")
    # The payload exactly as it goes on the wire (compact JSON, or the text of a raw
    # event), so replay and live delivery send the same bytes.
    data = models.TextField(help_text="JSON, or text for a raw event")
    # A raw event's data is a string sent as is (an HTML fragment for htmx or Turbo),
    # not JSON: the wire is the same, but readers (the admin, `payload`) must know.
    raw = models.BooleanField("text", default=False, help_text="The data is text sent as is, not JSON")
    created = models.DateTimeField(default=timezone.now, db_index=True)

    class Meta:
        ordering = ["-id"]
        constraints = [
            models.UniqueConstraint(fields=["channel", "seq"], name="events_event_channel_seq"),
        ]

    def __str__(self) -> str:
        return f"{self.sse_id} {self.type}"

    @property
    def sse_id(self) -> str:
        return f"{self.channel}:{self.seq}"

    @property
    def payload(self) -> Any:
        """The data as sent: the decoded JSON value, or the text of a raw event."""
        return self.data if self.raw else json.loads(self.data)
