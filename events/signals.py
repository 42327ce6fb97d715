"""The app's signals: event_stored, sent by publishing; and broadcast_on_save, which
sends an event whenever instances of a model are saved or deleted."""

from __future__ import annotations

import functools
import json
from collections.abc import Callable, Iterable
from typing import Any

from django.core import serializers
from django.core.serializers.json import DjangoJSONEncoder
from django.db import models
from django.db.models.signals import post_delete, post_save
from django.dispatch import Signal

from events.names import validate_channel, validate_event_type

# Sent once per stored batch (one send_event, one send_events call, one round of async
# publishers), in the publisher's thread, as soon as the events are stored: inside a
# transaction that is before the commit (and whether or not it commits). Arguments:
# sender (the Event model) and events (the stored Events, in seq order per channel).
# events.testing.capture_events listens to it.
event_stored = Signal()

Serializer = Callable[[models.Model], Any]


def model_payload(instance: models.Model, fields: Iterable[str] | None = None) -> dict[str, Any]:
    """Default payload: the model label, the pk and the concrete fields as JSON values;
    only `fields` when given. Events on a public channel are public: name the fields."""
    options = {} if fields is None else {"fields": list(fields)}
    (row,) = serializers.serialize("python", [instance], **options)
    fields = json.loads(json.dumps(row["fields"], cls=DjangoJSONEncoder))
    return {
        "model": instance._meta.label_lower,
        "pk": json.loads(json.dumps(instance.pk, cls=DjangoJSONEncoder)),
        "fields": fields,
    }


def broadcast_on_save(
    model: type[models.Model],
    *,
    channel: str | Callable[[models.Model], str],
    event: str | None = None,
    serialize: Serializer | None = None,
    template: str | None = None,
    fields: Iterable[str] | None = None,
) -> None:
    """Send an event after every save and delete of `model`.

    `channel` is a name or a callable of the instance. The event type is `event` if
    given, else `<model>.created`, `<model>.updated` or `<model>.deleted`. The payload
    is `serialize(instance)` (default: model_payload, of `fields` only when given) with
    an `action` key added when it is a dict; or, with `template`, that template rendered
    (context: `object`, the model's name and `action`) and sent as HTML
    (events.html.send_html). Inside a transaction the event goes out on commit.
    """
    if isinstance(channel, str):
        validate_channel(channel)
    if event is not None:
        validate_event_type(event)
    if serialize is not None and template is not None:
        raise ValueError("broadcast_on_save takes serialize or template, not both")
    if fields is not None and (serialize is not None or template is not None):
        raise ValueError("fields are for the default payload: pass either serialize, template or fields")
    to_payload = serialize or functools.partial(model_payload, fields=fields)
    model_name = model._meta.model_name or model.__name__.lower()

    def emit(instance: models.Model, action: str) -> None:
        # Here, not at the top: publishing imports this module for event_stored.
        from events.html import send_html
        from events.publish import send_event

        name = channel(instance) if callable(channel) else channel
        kind = event or f"{model_name}.{action}"
        if template is not None:
            context = {"object": instance, model_name: instance, "action": action}
            send_html(name, template, context, event=kind)
            return
        payload = to_payload(instance)
        if isinstance(payload, dict):
            payload = {**payload, "action": action}
        send_event(name, payload, event=kind)

    def on_save(sender: Any, instance: models.Model, created: bool, raw: bool = False, **kwargs: Any) -> None:
        if raw:  # loaddata: fixtures are not live events
            return
        emit(instance, "created" if created else "updated")

    def on_delete(sender: Any, instance: models.Model, **kwargs: Any) -> None:
        emit(instance, "deleted")

    uid = f"events.broadcast_on_save:{model._meta.label_lower}:{channel!r}:{event}:{template}"
    post_save.connect(on_save, sender=model, weak=False, dispatch_uid=uid + ":save")
    post_delete.connect(on_delete, sender=model, weak=False, dispatch_uid=uid + ":delete")
