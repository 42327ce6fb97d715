"""The admin: the event log, sending from "add", re-sending, and broadcast_action()."""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest
from django.test import Client

from demo.models import Order
from events import send_event
from events.models import Event
from tests.layer_probe import GroupListener
from tests.streams import channel

pytestmark = pytest.mark.django_db(transaction=True)

ARRIVE = 3.0
QUIET = 0.5
CHANGELIST = "/admin/events/event/"
ADD = "/admin/events/event/add/"


def rows(name: str) -> list[tuple[int, str, str]]:
    return list(Event.objects.filter(channel=name).order_by("seq").values_list("seq", "type", "data"))


def test_changelist_shows_events(admin_client: Client) -> None:
    name = channel()
    send_event(name, {"hello": "admin"}, event="greeting")
    response = admin_client.get(CHANGELIST)
    assert response.status_code == 200
    html = response.content.decode()
    assert f"{name}:1" in html
    assert "greeting" in html
    assert "{&quot;hello&quot;:&quot;admin&quot;}" in html


def test_changelist_search_and_filter(admin_client: Client) -> None:
    a, b = channel(), channel()
    send_event(a, 1, event="alpha")
    send_event(b, 2, event="beta")
    found = admin_client.get(CHANGELIST, {"q": a}).content.decode()
    assert f"{a}:1" in found and f"{b}:1" not in found
    filtered = admin_client.get(CHANGELIST, {"type": "beta"}).content.decode()
    assert f"{b}:1" in filtered and f"{a}:1" not in filtered


def test_change_page_is_read_only(admin_client: Client) -> None:
    name = channel()
    event = send_event(name, {"a": 1}, event="t")
    url = f"/admin/events/event/{event.pk}/change/"
    assert admin_client.get(url).status_code == 200
    # Posting the change form changes nothing and sends nothing.
    with GroupListener(name) as listener:
        admin_client.post(url, {"channel": "other", "type": "x", "data": "2", "_save": "Save"})
        assert listener.messages(timeout=QUIET) == []
    assert rows(name) == [(1, "t", '{"a":1}')]


def test_add_form_sends_the_event(admin_client: Client) -> None:
    name = channel()
    with GroupListener(name) as listener:
        response = admin_client.post(
            ADD, {"channel": name, "type": "from-admin", "data": '{ "n": 1, "s": "é" }', "_save": "Save"}
        )
        received = listener.messages(count=1, timeout=ARRIVE)
    assert response.status_code == 302, response.content
    assert rows(name) == [(1, "from-admin", '{"n":1,"s":"é"}')]
    assert received == [
        {"type": "events.event", "channel": name, "seq": 1, "event": "from-admin", "data": '{"n":1,"s":"é"}'}
    ]
    # A second one continues the channel's sequence.
    admin_client.post(ADD, {"channel": name, "type": "from-admin", "data": "2", "_save": "Save"})
    assert [row[0] for row in rows(name)] == [1, 2]


@pytest.mark.parametrize(
    ("form", "field"),
    [
        ({"type": "t", "data": "{not json"}, "data"),
        ({"type": "t", "data": "NaN"}, "data"),
        ({"type": "t", "data": ""}, "data"),
        ({"type": "t", "data": "[" * 100_000}, "data"),
        ({"channel": "bad name", "type": "t", "data": "1"}, "channel"),
        ({"channel": "a/b", "type": "t", "data": "1"}, "channel"),
        ({"type": "bad type", "data": "1"}, "type"),
        ({"type": "a:b", "data": "1"}, "type"),
    ],
    ids=[
        "bad-json",
        "nan",
        "empty-data",
        "deep-nesting",
        "channel-space",
        "channel-slash",
        "type-space",
        "type-colon",
    ],
)
def test_add_form_rejects_bad_input(admin_client: Client, form: dict[str, str], field: str) -> None:
    name = channel()
    data = {"channel": name, **form, "_save": "Save"}
    before = Event.objects.count()
    with GroupListener(data["channel"]) as listener:
        response = admin_client.post(ADD, data)
        assert listener.messages(timeout=QUIET) == []
    assert response.status_code == 200
    errors = response.context["adminform"].form.errors
    assert field in errors, errors
    assert Event.objects.count() == before


def test_add_form_rejects_a_payload_over_the_limit(admin_client: Client, settings) -> None:
    settings.EVENTS_MAX_PAYLOAD_BYTES = 20
    name = channel()
    response = admin_client.post(
        ADD, {"channel": name, "type": "t", "data": json.dumps("x" * 30), "_save": "Save"}
    )
    assert response.status_code == 200
    assert "over the limit" in str(response.context["adminform"].form.errors["data"])
    assert rows(name) == []


def test_send_again_resends_as_new_events(admin_client: Client) -> None:
    name = channel()
    first = send_event(name, {"n": 1}, event="one")
    second = send_event(name, {"n": 2}, event="two")
    send_event(name, {"n": 3}, event="three")
    with GroupListener(name) as listener:
        response = admin_client.post(
            CHANGELIST, {"action": "send_again", "_selected_action": [second.pk, first.pk]}
        )
        received = listener.messages(count=2, timeout=ARRIVE)
        assert listener.messages(timeout=QUIET) == []
    assert response.status_code == 302
    # Oldest first, each with a new seq and the original type and data.
    assert [(m["seq"], m["event"], m["data"]) for m in received] == [
        (4, "one", '{"n":1}'),
        (5, "two", '{"n":2}'),
    ]
    assert rows(name) == [
        (1, "one", '{"n":1}'),
        (2, "two", '{"n":2}'),
        (3, "three", '{"n":3}'),
        (4, "one", '{"n":1}'),
        (5, "two", '{"n":2}'),
    ]
    messages = [str(m) for m in admin_client.get(CHANGELIST).context["messages"]]
    assert "Sent 2 event(s) again." in messages


def test_send_again_stores_the_selection_in_one_batch(admin_client: Client) -> None:
    """One transaction and one round trip for the selection, as broadcast_action does: the
    rows are stored together (one event_stored send), not one by one."""
    from events.signals import event_stored

    name = channel()
    pks = [send_event(name, n).pk for n in range(3)]
    batches: list[list[str]] = []

    def receiver(sender: Any, events: list[Event], **kwargs: Any) -> None:
        batches.append([event.sse_id for event in events])

    event_stored.connect(receiver)
    try:
        response = admin_client.post(CHANGELIST, {"action": "send_again", "_selected_action": pks})
    finally:
        event_stored.disconnect(receiver)
    assert response.status_code == 302
    assert batches == [[f"{name}:4", f"{name}:5", f"{name}:6"]]


def test_send_again_over_the_current_limit_reports_instead_of_500(admin_client: Client, settings) -> None:
    name = channel()
    big = send_event(name, "x" * 100)
    settings.EVENTS_MAX_PAYLOAD_BYTES = 50
    admin_client.raise_request_exception = False
    response = admin_client.post(CHANGELIST, {"action": "send_again", "_selected_action": [big.pk]})
    assert response.status_code == 302
    assert [row[0] for row in rows(name)] == [1]


def test_order_broadcast_action_sends_one_event_per_order(admin_client: Client) -> None:
    orders = [
        Order.objects.create(customer="Ada", status=Order.Status.PAID),
        Order.objects.create(customer="Bo"),
    ]
    unselected = Order.objects.create(customer="Cy")
    pks = {order.pk for order in orders}
    with GroupListener("orders") as listener:
        response = admin_client.post(
            "/admin/demo/order/",
            {"action": "broadcast_order_status", "_selected_action": sorted(pks)},
        )
        received = listener.messages(count=2, timeout=ARRIVE)
        received += listener.messages(timeout=QUIET)
    assert response.status_code == 302
    status = [m for m in received if m["event"] == "order-status"]
    assert all(m["channel"] == "orders" for m in status)
    payloads = sorted((json.loads(m["data"]) for m in status), key=lambda p: p["id"])
    assert payloads == [
        {"id": orders[0].pk, "customer": "Ada", "status": "paid"},
        {"id": orders[1].pk, "customer": "Bo", "status": "new"},
    ]
    assert unselected.pk not in {p["id"] for p in payloads}
    messages = [str(m) for m in admin_client.get("/admin/demo/order/").context["messages"]]
    assert "Sent 2 event(s) as 'order-status'." in messages


def test_add_form_starts_ready_to_send_to_the_feeds_default_channel(admin_client: Client) -> None:
    form = admin_client.get(ADD).context["adminform"].form
    assert (form["channel"].value(), form["type"].value(), form["data"].value()) == (
        "public",
        "message",
        "{}",
    )
    # ?channel= (a link from elsewhere) picks another.
    assert (
        admin_client.get(ADD, {"channel": "orders"}).context["adminform"].form["channel"].value() == "orders"
    )


def test_view_on_site_opens_the_live_feed_of_the_channel(admin_client: Client) -> None:
    event = send_event(channel(), 1)
    html = admin_client.get(f"/admin/events/event/{event.pk}/change/").content.decode()
    assert f'href="/feed/?channel={event.channel}"' in html  # the "View on site" button
    order = Order.objects.create(customer="Di")
    html = admin_client.get(f"/admin/demo/order/{order.pk}/change/").content.decode()
    assert 'href="/feed/?channel=orders"' in html


def test_stored_events_cannot_be_deleted_from_the_admin(admin_client: Client) -> None:
    """Deleting an event would leave a hole in its channel's seqs, which resume reads
    as "trimmed": the log is read-only apart from sending."""
    stored = send_event(channel(), {"n": 1})
    changelist = admin_client.get("/admin/events/event/")
    assert "delete_selected" not in changelist.content.decode()
    response = admin_client.post(f"/admin/events/event/{stored.pk}/delete/", {"post": "yes"})
    assert response.status_code == 403
    assert Event.objects.filter(pk=stored.pk).exists()


def test_send_again_sends_the_stored_data_as_stored(admin_client: Client) -> None:
    """A row nested too deeply to decode and encode again (stored by an older version,
    or written directly) is sent as it is stored, not a 500 half-way through."""
    from events import store

    name = channel()
    deep = "[" * 3000 + "]" * 3000
    stored = store.append(name, "deep", deep)
    plain = send_event(name, {"n": 1})
    with GroupListener(name) as listener:
        response = admin_client.post(
            CHANGELIST, {"action": "send_again", "_selected_action": [stored.pk, plain.pk]}
        )
        received = listener.messages(count=2, timeout=ARRIVE)
    assert response.status_code == 302
    assert [(m["event"], m["data"]) for m in received] == [("deep", deep), ("message", '{"n":1}')]
    assert rows(name)[2:] == [(3, "deep", deep), (4, "message", '{"n":1}')]


def test_send_again_refuses_a_large_selection(admin_client: Client) -> None:
    from events.admin import SEND_AGAIN_MAX

    name = channel()
    pks = [send_event(name, n).pk for n in range(SEND_AGAIN_MAX + 1)]
    response = admin_client.post(CHANGELIST, {"action": "send_again", "_selected_action": pks})
    assert response.status_code == 302
    assert len(rows(name)) == SEND_AGAIN_MAX + 1  # nothing sent
    messages = [str(m) for m in admin_client.get(CHANGELIST).context["messages"]]
    assert any("Nothing was sent" in m for m in messages), messages


def staff_with(django_user_model, *codenames: str) -> Client:
    from django.contrib.auth.models import Permission

    user = django_user_model.objects.create_user(f"s-{uuid.uuid4().hex[:6]}", password="pw", is_staff=True)
    user.user_permissions.add(
        *Permission.objects.filter(content_type__app_label="events", codename__in=codenames)
    )
    client = Client()
    client.force_login(user)
    return client


def test_send_again_needs_the_add_permission(django_user_model) -> None:
    name = channel()
    event = send_event(name, 1)
    viewer = staff_with(django_user_model, "view_event")
    viewer.post(CHANGELIST, {"action": "send_again", "_selected_action": [event.pk]})
    assert len(rows(name)) == 1


def test_admin_applies_the_publish_policy(django_user_model) -> None:
    """Staff who may add events still send to user-* and private-* only as superusers."""
    editor = staff_with(django_user_model, "view_event", "add_event")
    private = send_event("private-ops", 1)
    editor.post(CHANGELIST, {"action": "send_again", "_selected_action": [private.pk]})
    assert Event.objects.filter(channel="private-ops").count() == 1
    response = editor.post(ADD, {"channel": "private-ops", "type": "message", "data": "1"})
    assert response.status_code == 200  # the form again, with the reason
    assert "not allowed to publish" in response.content.decode()
    assert Event.objects.filter(channel="private-ops").count() == 1
    ok = channel()
    assert editor.post(ADD, {"channel": ok, "type": "message", "data": "1"}).status_code == 302
    assert len(rows(ok)) == 1


def test_open_streams_lists_the_busiest_channels_and_counts_the_rest(
    admin_client: Client, monkeypatch
) -> None:
    from events import presence
    from events.admin import PRESENCE_TOP

    spoofed = {f"spoof-{n:05d}": 1 for n in range(5000)}
    monkeypatch.setattr(presence, "counts", lambda: {"channels": {**spoofed, "orders": 7}, "processes": 1})
    html = admin_client.get(CHANGELIST).content.decode()
    assert "orders" in html
    assert html.count("spoof-") <= 3 * PRESENCE_TOP
    assert f"And {5001 - PRESENCE_TOP} other channels with {5001 - PRESENCE_TOP} streams." in html
