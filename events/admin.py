"""Admin: the event log (send from "add", re-send as an action) and broadcast_action()."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, cast

from django import forms
from django.contrib import admin, messages
from django.db import models
from django.db.models import QuerySet
from django.http import HttpRequest
from django.urls import NoReverseMatch, reverse
from django.utils.http import urlencode
from django.utils.text import Truncator

from events import metrics, presence
from events.html import render_fragment
from events.log import log_failure
from events.models import Event
from events.names import channel_error, event_type_error, validate_channel, validate_event_type
from events.policy import publish_denied
from events.publish import (
    Prepared,
    encode_payload,
    encode_text,
    prepare,
    prepare_encoded,
    send_event,
    send_prepared,
)
from events.signals import model_payload

logger = logging.getLogger(__name__)


def broadcast_action(
    channel: str | Callable[[models.Model], str],
    *,
    event: str = "message",
    serialize: Callable[[models.Model], Any] | None = None,
    template: str | None = None,
    description: str | None = None,
) -> Callable[[admin.ModelAdmin[Any], HttpRequest, QuerySet[Any]], None]:
    """An admin action that sends one event per selected object: `serialize(obj)` as
    JSON (default: model_payload), or `template` rendered as HTML (context: `object`
    and the model's name; see events.html.send_html).

    class OrderAdmin(admin.ModelAdmin):
        actions = [broadcast_action("orders", event="order-updated")]
    """
    if isinstance(channel, str):
        validate_channel(channel)
    validate_event_type(event)
    if serialize is not None and template is not None:
        raise ValueError("broadcast_action takes serialize or template, not both")
    to_payload = serialize or model_payload

    def prepare_one(obj: models.Model, name: str, request: HttpRequest) -> Prepared:
        if template is None:
            return prepare(name, to_payload(obj), event)
        context = {"object": obj, obj._meta.model_name or type(obj).__name__.lower(): obj}
        return prepare(name, render_fragment(template, context, request), event, raw=True)

    def action(modeladmin: admin.ModelAdmin[Any], request: HttpRequest, queryset: QuerySet[Any]) -> None:
        items = []
        for obj in queryset:
            name = channel(obj) if callable(channel) else channel
            try:
                items.append(prepare_one(obj, name, request))
            except ValueError as exc:
                modeladmin.message_user(request, f"{obj}: not sent: {exc}", messages.ERROR)
        # One transaction and one Redis round trip for the lot.
        with metrics.publishing_via("admin"):
            sent = len(send_prepared(items))
        modeladmin.message_user(request, f"Sent {sent} event(s) as {event!r}.", messages.SUCCESS)

    label = channel if isinstance(channel, str) else "its channel"
    action.__name__ = f"broadcast_{event.replace('-', '_').replace('.', '_')}"
    return admin.action(description=description or f"Broadcast selected as {event!r} to {label}")(action)


# The generic forms of these classes are for the type checker; at run time they are
# not subscriptable.
if TYPE_CHECKING:
    EventFormBase = forms.ModelForm[Event]
    EventAdminBase = admin.ModelAdmin[Event]
else:
    EventFormBase = forms.ModelForm
    EventAdminBase = admin.ModelAdmin

# "Send again" sends at most this many events at once: a larger selection (every page
# of a long list) is refused with a message rather than flooding every stream.
SEND_AGAIN_MAX = 100
# "Open streams now" lists this many channels, the busiest first.
PRESENCE_TOP = 20


class EventForm(EventFormBase):
    # Set per request by EventAdmin.get_form: the publish policy is asked about this user.
    user: Any = None

    class Meta:
        model = Event
        # "raw" before "data": clean_data reads it.
        fields = ["channel", "type", "raw", "data"]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # Set here, not declared on the class, where `data` would hide the form's own
        # `data` (what was posted) from type checkers. Absent on a stored event's page,
        # where it is read-only.
        if "data" in self.fields:
            self.fields["data"] = forms.CharField(
                widget=forms.Textarea(attrs={"rows": 6, "spellcheck": "false"}),
                help_text='Any JSON value, e.g. {"hello": "world"}, or with "text" ticked any text, sent '
                "as is (an HTML fragment for htmx). Saving sends the event to every open stream.",
                initial="{}",
                strip=False,
            )

    def clean_channel(self) -> str:
        value: str = self.cleaned_data["channel"]
        problem = channel_error(value)
        if problem:
            raise forms.ValidationError(problem)
        denied = publish_denied(self.user, value) if self.user is not None else None
        if denied:
            raise forms.ValidationError(denied)
        return value

    def clean_type(self) -> str:
        value: str = self.cleaned_data["type"]
        problem = event_type_error(value)
        if problem:
            raise forms.ValidationError(problem)
        return value

    def clean_data(self) -> str:
        raw = self.cleaned_data["data"]
        if self.cleaned_data.get("raw"):
            try:
                return encode_text(raw)
            except ValueError as exc:
                raise forms.ValidationError(str(exc)) from exc
        try:
            value = json.loads(raw)
        except ValueError as exc:
            raise forms.ValidationError(f"Not valid JSON: {exc}") from exc
        except RecursionError as exc:
            raise forms.ValidationError("Not valid JSON: nested too deeply") from exc
        try:
            return encode_payload(value)
        except ValueError as exc:
            raise forms.ValidationError(str(exc)) from exc


# The figures above the event log (events/metrics.py headline()), all processes together.
HEADLINE = [
    ("streams_open", "Open streams"),
    ("published", "Events published"),
    ("deliveries", "Deliveries"),
    ("written_bytes", "Bytes written"),
    ("replays", "Resumes with replay"),
    ("stream_resets", "Stream resets"),
    ("gap_fills", "Gaps filled from the store"),
    ("layer_lost", "Channel layer lost"),
    ("broadcast_failures", "Broadcasts failed"),
    ("broadcast_skips", "Broadcasts skipped"),
]


@admin.register(Event)
class EventAdmin(EventAdminBase):
    form = EventForm
    list_display = ["sse_id", "channel", "type", "created", "raw", "short_data"]
    list_filter = ["type", "raw", "created", "channel"]
    search_fields = ["channel", "type", "data"]
    date_hierarchy = "created"
    actions = ["send_again"]
    list_per_page = 50
    # Shows the open streams per channel, across processes, above the list.
    change_list_template = "admin/events/event/change_list.html"

    def changelist_view(self, request: HttpRequest, extra_context: dict[str, Any] | None = None) -> Any:
        try:
            live: dict[str, Any] = {**presence.counts(), "error": ""}
        except presence.PresenceUnavailable as exc:
            live = {"channels": {}, "processes": 0, "error": str(exc)}
        # Anyone can open streams on channel names of their choosing: list only the
        # busiest, and count the rest, so that the page stays small and readable.
        busiest = sorted(live["channels"].items(), key=lambda item: (-item[1], item[0]))
        live["channels"] = dict(busiest[:PRESENCE_TOP])
        live["other_channels"] = len(busiest) - len(live["channels"])
        live["other_streams"] = sum(count for _, count in busiest[PRESENCE_TOP:])
        figures = metrics.headline()
        rows = [(label, f"{int(figures[key]):,}") for key, label in HEADLINE]
        return super().changelist_view(
            request,
            {
                **(extra_context or {}),
                "presence": live,
                "metrics": rows,
                "metrics_lost": figures["hubs_lost"],
            },
        )

    def get_form(
        self, request: HttpRequest, obj: Event | None = None, change: bool = False, **kwargs: Any
    ) -> Any:
        form = cast(type[EventForm], super().get_form(request, obj, change, **kwargs))
        form.user = request.user  # a class made for this request: nothing is shared
        return form

    def view_on_site(self, obj: Event) -> str | None:
        try:
            feed = reverse("events:feed")
        except NoReverseMatch:  # the project has not included events.urls: no button
            return None
        return f"{feed}?{urlencode({'channel': obj.channel})}"

    def get_changeform_initial_data(self, request: HttpRequest) -> dict[str, Any]:
        # "Add event" opens ready to send to the feed's default channel (?channel= overrides).
        initial = {"channel": "public", "type": "message", "raw": False, "data": "{}"}
        return {**initial, **super().get_changeform_initial_data(request)}

    @admin.display(description="data")
    def short_data(self, obj: Event) -> str:
        return Truncator(obj.data).chars(80)

    @admin.display(description="id")
    def sse_id(self, obj: Event) -> str:
        return obj.sse_id

    def get_readonly_fields(self, request: HttpRequest, obj: Event | None = None) -> Any:
        # Stored events are history: they can be read and re-sent, not edited.
        return ["channel", "type", "raw", "data", "seq", "created"] if obj else []

    def has_delete_permission(self, request: HttpRequest, obj: Event | None = None) -> bool:
        # Resume relies on a channel's stored seqs having no holes below the newest
        # (a hole reads as "trimmed"); only trimming, oldest first, removes events.
        return False

    def save_model(self, request: HttpRequest, obj: Event, form: Any, change: bool) -> None:
        if change:
            return
        with metrics.publishing_via("admin"):
            sent = send_event(obj.channel, obj.payload, event=obj.type, raw=obj.raw)
        obj.pk, obj.seq, obj.created = sent.pk, sent.seq, sent.created

    @admin.action(description="Send selected events again (as new events)", permissions=["add"])
    def send_again(self, request: HttpRequest, queryset: QuerySet[Event]) -> None:
        selected = queryset.count()
        if selected > SEND_AGAIN_MAX:
            self.message_user(
                request,
                f"{selected} events selected: send at most {SEND_AGAIN_MAX} again at once. Nothing was sent.",
                messages.ERROR,
            )
            return
        items: list[Prepared] = []
        for stored in queryset.order_by("id"):
            denied = publish_denied(request.user, stored.channel)
            if denied:
                self.message_user(request, f"{stored.sse_id}: not sent: {denied}", messages.ERROR)
                continue
            try:
                # The data as stored: not decoded and encoded again.
                items.append(prepare_encoded(stored.channel, stored.data, event=stored.type, raw=stored.raw))
            except ValueError as exc:
                self.message_user(request, f"{stored.sse_id}: not sent: {exc}", messages.ERROR)
        try:
            # One transaction and one Redis round trip for the lot.
            with metrics.publishing_via("admin"):
                sent = send_prepared(items)
        except Exception as exc:
            # The store failing (the database down) is a message, not a 500.
            log_failure(logger, exc, "sending %d event(s) again failed", len(items))
            self.message_user(request, f"Nothing was sent: {exc}", messages.ERROR)
            return
        self.message_user(request, f"Sent {len(sent)} event(s) again.", messages.SUCCESS)
