"""broadcast_on_save (events/signals.py), through the demo Order model (channel "orders")."""

from __future__ import annotations

import asyncio
import json
import uuid
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from django.core.management import call_command
from django.db import transaction
from django.db.models.signals import post_save

from demo.models import Order
from events.models import Event
from tests.layer_probe import GroupListener

pytestmark = pytest.mark.django_db(transaction=True)

ARRIVE = 3.0
QUIET = 0.5


def for_order(messages: list[dict[str, Any]], pk: int) -> list[dict[str, Any]]:
    """The messages about one order: "orders" is a fixed channel that other tests use too."""
    return [m for m in messages if json.loads(m["data"]).get("pk") == pk]


def test_create_update_delete_are_broadcast() -> None:
    with GroupListener("orders") as listener:
        order = Order.objects.create(customer="Ada", total=Decimal("12.50"))
        pk = order.pk
        created = for_order(listener.messages(count=1, timeout=ARRIVE), pk)

        order.status = Order.Status.PAID
        order.save()
        updated = for_order(listener.messages(count=1, timeout=ARRIVE), pk)

        order.delete()
        deleted = for_order(listener.messages(count=1, timeout=ARRIVE), pk)

    # The demo names the fields it sends: the customer stays off the public channel.
    fields = {"status": "new", "total": "12.50"}
    assert [m["event"] for m in created] == ["order.created"]
    assert json.loads(created[0]["data"]) == {
        "model": "demo.order",
        "pk": pk,
        "fields": fields,
        "action": "created",
    }
    assert created[0]["channel"] == "orders"

    assert [m["event"] for m in updated] == ["order.updated"]
    assert json.loads(updated[0]["data"]) == {
        "model": "demo.order",
        "pk": pk,
        "fields": {**fields, "status": "paid"},
        "action": "updated",
    }

    assert [m["event"] for m in deleted] == ["order.deleted"]
    assert json.loads(deleted[0]["data"]) == {
        "model": "demo.order",
        "pk": pk,
        "fields": {**fields, "status": "paid"},
        "action": "deleted",
    }
    # Each went out as a stored event, in order.
    assert created[0]["seq"] < updated[0]["seq"] < deleted[0]["seq"]
    types = [
        e.type for e in Event.objects.filter(channel="orders").order_by("seq") if e.payload.get("pk") == pk
    ]
    assert types == ["order.created", "order.updated", "order.deleted"]


def test_update_through_the_demo_view_is_broadcast(admin_client) -> None:
    order = Order.objects.create(customer="Bo")
    with GroupListener("orders") as listener:
        response = admin_client.post(f"/demo/orders/{order.pk}/ship/")
        received = listener.messages(count=2, timeout=ARRIVE)
    assert response.status_code == 200
    assert [m["event"] for m in received] == ["order.updated", "order-shipped"]
    assert json.loads(received[0]["data"])["fields"]["status"] == "shipped"
    assert json.loads(received[1]["data"]) == {"id": order.pk, "status": "shipped"}
    assert response.json() == {"id": f"orders:{received[1]['seq']}"}


def test_save_in_a_rolled_back_transaction_is_not_broadcast() -> None:
    before = Event.objects.filter(channel="orders").count()
    with GroupListener("orders") as listener:
        with pytest.raises(RuntimeError), transaction.atomic():
            order = Order.objects.create(customer="Never")
            order.status = Order.Status.PAID
            order.save()
            raise RuntimeError("roll back")
        assert listener.messages(timeout=QUIET) == []
    assert not Order.objects.filter(customer="Never").exists()
    assert Event.objects.filter(channel="orders").count() == before


def test_save_in_a_transaction_is_broadcast_on_commit() -> None:
    with GroupListener("orders") as listener:
        with transaction.atomic():
            order = Order.objects.create(customer="Later")
            assert listener.messages(timeout=QUIET) == []
        received = for_order(listener.messages(count=1, timeout=ARRIVE), order.pk)
    assert [m["event"] for m in received] == ["order.created"]


def test_raw_save_signal_is_not_broadcast() -> None:
    order = Order.objects.create(customer="Raw")
    before = Event.objects.filter(channel="orders").count()
    with GroupListener("orders") as listener:
        post_save.send(
            sender=Order, instance=order, created=True, raw=True, using="default", update_fields=None
        )
        assert listener.messages(timeout=QUIET) == []
    assert Event.objects.filter(channel="orders").count() == before


def test_loaddata_is_not_broadcast(tmp_path: Path) -> None:
    fixture = tmp_path / "orders.json"
    rows = [
        {
            "model": "demo.order",
            "pk": 9001,
            "fields": {"customer": "Fixture", "status": "paid", "total": "3.00"},
        },
        {
            "model": "demo.order",
            "pk": 9002,
            "fields": {"customer": "Fixture", "status": "new", "total": "4.00"},
        },
    ]
    fixture.write_text(json.dumps(rows))
    before = Event.objects.filter(channel="orders").count()
    with GroupListener("orders") as listener:
        call_command("loaddata", str(fixture), verbosity=0)
        assert listener.messages(timeout=QUIET) == []
    assert Order.objects.filter(customer="Fixture").count() == 2
    assert Event.objects.filter(channel="orders").count() == before


def test_model_payload_sends_only_the_fields_named() -> None:
    from events.signals import broadcast_on_save, model_payload

    order = Order.objects.create(customer="Secret", total=Decimal("1.00"))
    assert model_payload(order, fields=["status"]) == {
        "model": "demo.order",
        "pk": order.pk,
        "fields": {"status": "new"},
    }
    assert set(model_payload(order)["fields"]) == {"customer", "status", "total"}
    with pytest.raises(ValueError, match="fields are for the default payload"):
        broadcast_on_save(Order, channel="orders", serialize=model_payload, fields=["status"])


# -- event_stored ---------------------------------------------------------------------


def test_event_stored_is_sent_once_per_stored_batch_with_its_events() -> None:
    """One send per send_event, per send_events call and per transaction-less store; the
    events as stored, in order; sent before the commit inside a transaction, and for a
    rolled-back one too (it says stored, not committed)."""
    from events import send_event, send_events
    from events.signals import event_stored

    calls: list[tuple[Any, list[str]]] = []

    def receiver(sender: Any, events: list[Event], **kwargs: Any) -> None:
        calls.append((sender, [event.sse_id for event in events]))

    name = f"sig-{uuid.uuid4().hex[:10]}"
    event_stored.connect(receiver)
    try:
        send_event(name, 1)
        send_events([{"channel": name, "data": 2}, {"channel": name, "data": 3}])
        with transaction.atomic():
            send_event(name, 4)
            assert calls[-1] == (Event, [f"{name}:4"])  # before the commit
            transaction.set_rollback(True)
    finally:
        event_stored.disconnect(receiver)
    send_event(name, 5)  # disconnected: not seen
    assert calls == [
        (Event, [f"{name}:1"]),
        (Event, [f"{name}:2", f"{name}:3"]),
        (Event, [f"{name}:4"]),
    ]


async def test_event_stored_is_sent_once_per_shared_commit_of_async_publishers() -> None:
    from events import asend_event
    from events.signals import event_stored

    batches: list[list[int]] = []

    def receiver(sender: Any, events: list[Event], **kwargs: Any) -> None:
        batches.append([event.seq for event in events])

    name = f"sig-{uuid.uuid4().hex[:10]}"
    event_stored.connect(receiver)
    try:
        await asyncio.gather(*(asend_event(name, n) for n in range(10)))
    finally:
        event_stored.disconnect(receiver)
    # All ten were waiting when the store thread's first round began: one commit, one send.
    assert batches == [list(range(1, 11))]
