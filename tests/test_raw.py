"""Raw text events and HTML fragments: every publishing path, the wire, resume, the admin."""

from __future__ import annotations

import asyncio
import json
from io import StringIO

import pytest
from django.contrib.auth.models import AnonymousUser
from django.core.management import CommandError, call_command
from django.template import TemplateDoesNotExist
from django.test import Client, RequestFactory

from demo.models import Order
from events import asend_event, asend_html, send_event, send_html
from events.admin import broadcast_action
from events.html import PARTIALS
from events.models import Event
from events.publish import encode_text
from events.signals import broadcast_on_save
from events.testing import capture_events, parse_sse
from tests.streams import channel, open_live

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("hub_cleanup")]

TOKEN = "raw-publish-token"
HTML = '<b>Breaking</b>: <a href="/story/1?a=1&b=2">story</a>'


def stored(name: str) -> list[tuple[str, str, bool]]:
    return list(Event.objects.filter(channel=name).order_by("seq").values_list("type", "data", "raw"))


# The data as given: line breaks, NUL, size


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("one line", "one line"),
        ("a\nb", "a\nb"),
        ("a\r\nb\rc\n", "a\nb\nc\n"),
        ("", ""),
        (" leading space", " leading space"),
        ('"quoted" {not: json}', '"quoted" {not: json}'),
    ],
)
def test_text_keeps_everything_but_line_break_style(text: str, expected: str) -> None:
    assert encode_text(text) == expected


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ("a\x00b", "NUL"),
        (b"<b>bytes</b>", "must be a string, not bytes"),
        ({"a": 1}, "must be a string, not dict"),
        ("\ud800", "lone surrogate"),
    ],
)
def test_bad_text_is_refused_and_nothing_stored(value: object, reason: str) -> None:
    name = channel()
    with pytest.raises(ValueError, match=reason):
        send_event(name, value, raw=True)
    assert stored(name) == []


def test_text_over_the_payload_limit_is_refused(settings) -> None:
    settings.EVENTS_MAX_PAYLOAD_BYTES = 10
    name = channel()
    send_event(name, "é" * 5, raw=True)  # 10 bytes of UTF-8
    with pytest.raises(ValueError, match="11 bytes, over the limit of 10"):
        send_event(name, "é" * 5 + "x", raw=True)


def test_raw_event_is_stored_as_text_and_json_events_unchanged() -> None:
    name = channel()
    with capture_events() as sent:
        send_event(name, HTML, event="headline", raw=True)
        send_event(name, HTML, event="headline")  # the same string as JSON: quoted
    assert stored(name) == [("headline", HTML, True), ("headline", json.dumps(HTML), False)]
    assert [event.payload for event in sent] == [HTML, HTML]


async def test_asend_event_raw() -> None:
    name = channel()
    event = await asend_event(name, "a\r\nb", event="t", raw=True)
    assert (event.sse_id, event.data, event.raw) == (f"{name}:1", "a\nb", True)


# On the wire: live, replayed, and parsed back


async def test_live_and_replayed_raw_events_have_the_same_bytes() -> None:
    name = channel()
    expected = f'id: {name}:1\nevent: row\ndata: <li>one</li>\ndata: <li class="x">two</li>\n\n'.encode()
    live = await open_live(f"/events/{name}/")
    await asend_event(name, '<li>one</li>\r\n<li class="x">two</li>', event="row", raw=True)
    await live.events(1)
    assert live.buffer.endswith(expected)
    await live.close()

    # A client resuming from before it gets the very same frame from the store.
    resumed = await open_live(f"/events/{name}/", headers=[(b"last-event-id", f"{name}:0".encode())])
    await resumed.events(1)
    assert expected in resumed.buffer
    [event] = [e for e in parse_sse(resumed.buffer) if e.type == "row"]
    assert (event.data, event.id) == ('<li>one</li>\n<li class="x">two</li>', f"{name}:1")
    await resumed.close()


async def test_raw_and_json_events_interleave_in_order_with_resume() -> None:
    name = channel()
    await asend_event(name, {"n": 1})
    await asend_event(name, "<p>2</p>", raw=True)
    await asend_event(name, {"n": 3})
    stream = await open_live(f"/events/{name}/", headers=[(b"last-event-id", f"{name}:1".encode())])
    events = await stream.events(2)
    assert [(e["id"], e["data"]) for e in events] == [(f"{name}:2", "<p>2</p>"), (f"{name}:3", '{"n":3}')]
    await stream.close()


async def test_a_trimmed_position_is_reset_as_for_json_events() -> None:
    from channels.db import database_sync_to_async

    from events import store

    name = channel()
    for n in range(3):
        await asend_event(name, f"<p>{n}</p>", raw=True)
    await database_sync_to_async(store.trim)(name, 1)
    stream = await open_live(f"/events/{name}/", headers=[(b"last-event-id", f"{name}:0".encode())])
    await asend_event(name, "<p>live</p>", raw=True)
    events = await stream.events(2)
    assert events[0]["event"] == "stream-reset"
    assert (events[1]["id"], events[1]["data"]) == (f"{name}:4", "<p>live</p>")
    await stream.close()


async def test_multi_channel_stream_without_the_slash_answers_cross_origin(settings) -> None:
    """GET /events?channel=a used to be Django's 301 to /events/?channel=a, with no CORS
    headers: a cross-origin EventSource could not follow it."""
    origin = "https://app.example.com"
    settings.EVENTS_ALLOWED_ORIGINS = [origin]
    a, b = channel(), channel()
    stream = await open_live("/events", f"channel={a}&channel={b}".encode(), [(b"origin", origin.encode())])
    assert stream.status == 200
    assert stream.headers[b"access-control-allow-origin"] == origin.encode()
    await asend_event(b, "<i>b</i>", raw=True)
    [event] = await stream.events(1)
    assert (event["id"], event["data"]) == (f"{a}:0,{b}:1", "<i>b</i>")
    await stream.close()


# send_html and asend_html


def test_send_html_renders_with_autoescaping(tmp_path, settings) -> None:
    (tmp_path / "row.html").write_text('<li id="order-{{ order.pk }}">{{ order.customer }}</li>\n')
    settings.TEMPLATES = [{**settings.TEMPLATES[0], "DIRS": [tmp_path]}]
    name = channel()
    order = Order(pk=7, customer="<script>alert(1)</script> & Co")
    event = send_html(name, "row.html", {"order": order}, event="row")
    assert event.raw and event.type == "row"
    assert event.data == '<li id="order-7">&lt;script&gt;alert(1)&lt;/script&gt; &amp; Co</li>\n'


def test_send_html_passes_the_request_to_context_processors(tmp_path, settings) -> None:
    (tmp_path / "who.html").write_text("{{ request.path }} {{ user.username }}")
    settings.TEMPLATES = [{**settings.TEMPLATES[0], "DIRS": [tmp_path]}]
    request = RequestFactory().get("/somewhere/")
    request.user = AnonymousUser()
    event = send_html(channel(), "who.html", request=request)
    assert event.data == "/somewhere/ "


async def test_asend_html(tmp_path, settings) -> None:
    (tmp_path / "n.html").write_text("<b>{{ n }}</b>")
    settings.TEMPLATES = [{**settings.TEMPLATES[0], "DIRS": [tmp_path]}]
    event = await asend_html(channel(), "n.html", {"n": "<1>"}, event="n")
    assert (event.data, event.type, event.raw) == ("<b>&lt;1&gt;</b>", "n", True)


async def test_asend_html_shares_commits_with_other_async_publishers(tmp_path, settings, monkeypatch) -> None:
    """asend_html stores as asend_event does: on the store thread, in the round that
    coroutines publishing at the same moment share (events/group_commit.py)."""
    from events import group_commit

    (tmp_path / "n.html").write_text("<b>{{ n }}</b>")
    settings.TEMPLATES = [{**settings.TEMPLATES[0], "DIRS": [tmp_path]}]
    rounds: list[list[str]] = []
    real = group_commit._store_round

    def recording(prepared):
        rounds.append([data for _, _, data, _ in prepared])
        return real(prepared)

    monkeypatch.setattr(group_commit, "_store_round", recording)
    name = channel()
    events = await asyncio.gather(*(asend_html(name, "n.html", {"n": n}) for n in range(3)))
    assert sorted(e.seq for e in events) == [1, 2, 3]
    assert sorted(data for round_ in rounds for data in round_) == ["<b>0</b>", "<b>1</b>", "<b>2</b>"]


def test_send_encoded_text_gets_the_checks_of_any_text() -> None:
    """Text sent again as stored (the admin's "send again") is refused as send_event
    refuses it: a NUL character, say, which a row written directly may hold."""
    from events.publish import send_encoded

    name = channel()
    with pytest.raises(ValueError, match="NUL"):
        send_encoded(name, "a\x00b", raw=True)
    assert stored(name) == []
    assert send_encoded(name, "<b>ok</b>", raw=True).data == "<b>ok</b>"


def test_send_html_partial(tmp_path, settings) -> None:
    (tmp_path / "page.html").write_text(
        "<ul>{% partialdef row inline %}<li>{{ name }}</li>{% endpartialdef %}</ul>"
        if PARTIALS
        else "<ul></ul>"
    )
    settings.TEMPLATES = [{**settings.TEMPLATES[0], "DIRS": [tmp_path]}]
    name = channel()
    if PARTIALS:
        assert send_html(name, "page.html#row", {"name": "<Ada>"}).data == "<li>&lt;Ada&gt;</li>"
    else:
        with pytest.raises(TemplateDoesNotExist, match="partials .* need Django 6.0 or later"):
            send_html(name, "page.html#row", {"name": "Ada"})
        assert stored(name) == []


def test_send_html_bad_channel_stores_nothing(tmp_path, settings) -> None:
    (tmp_path / "x.html").write_text("x")
    settings.TEMPLATES = [{**settings.TEMPLATES[0], "DIRS": [tmp_path]}]
    with pytest.raises(ValueError, match="channel"):
        send_html("bad name", "x.html")


# broadcast_on_save and broadcast_action with a template


@pytest.fixture
def order_templates(tmp_path, settings):
    (tmp_path / "order.html").write_text('<li id="o{{ order.pk }}">{{ object.customer }} {{ action }}</li>')
    settings.TEMPLATES = [{**settings.TEMPLATES[0], "DIRS": [tmp_path]}]


def test_broadcast_on_save_with_a_template(order_templates) -> None:
    from django.db.models.signals import post_delete, post_save

    name = channel()
    broadcast_on_save(Order, channel=name, template="order.html")
    uid = f"events.broadcast_on_save:demo.order:{name!r}:None:order.html"
    try:
        order = Order.objects.create(customer="Ada & Bob")
        order.save()
        pk = order.pk
        order.delete()
    finally:
        post_save.disconnect(sender=Order, dispatch_uid=uid + ":save")
        post_delete.disconnect(sender=Order, dispatch_uid=uid + ":delete")
    assert stored(name) == [
        ("order.created", f'<li id="o{pk}">Ada &amp; Bob created</li>', True),
        ("order.updated", f'<li id="o{pk}">Ada &amp; Bob updated</li>', True),
        ("order.deleted", f'<li id="o{pk}">Ada &amp; Bob deleted</li>', True),
    ]


def test_serialize_and_template_together_are_refused() -> None:
    with pytest.raises(ValueError, match="not both"):
        broadcast_on_save(Order, channel="x", serialize=lambda o: 1, template="order.html")
    with pytest.raises(ValueError, match="not both"):
        broadcast_action("x", serialize=lambda o: 1, template="order.html")


def test_broadcast_action_with_a_template(order_templates) -> None:
    from django.contrib import admin

    name = channel()
    order = Order.objects.create(customer="<Ada>")
    action = broadcast_action(name, event="row", template="order.html")
    request = RequestFactory().post("/admin/demo/order/")
    request.user = AnonymousUser()
    sent: list[str] = []

    class Admin(admin.ModelAdmin):
        def message_user(self, request, message, level=None, **kwargs):
            sent.append(message)

    action(Admin(Order, admin.site), request, Order.objects.filter(pk=order.pk))
    assert stored(name) == [("row", f'<li id="o{order.pk}">&lt;Ada&gt; </li>', True)]
    assert sent == ["Sent 1 event(s) as 'row'."]


# The command and the HTTP endpoint


def test_command_raw_sends_data_as_is() -> None:
    name = channel()
    out = StringIO()
    call_command("send_event", name, '{"not": "parsed"}', "--raw", "--event", "t", stdout=out)
    call_command("send_event", name, "<b>hi</b>", "--raw", stdout=out)
    assert out.getvalue().split() == [f"{name}:1", f"{name}:2"]
    assert stored(name) == [("t", '{"not": "parsed"}', True), ("message", "<b>hi</b>", True)]
    with pytest.raises(CommandError, match="NUL"):
        call_command("send_event", name, "a\x00", "--raw")


def post(client: Client, name: str, body: object):
    return client.post(
        f"/events/{name}/",
        json.dumps(body),
        content_type="application/json",
        headers={"Authorization": f"Bearer {TOKEN}"},
    )


def test_http_text_field_sends_raw(client: Client, settings) -> None:
    settings.EVENTS_PUBLISH_TOKEN = TOKEN
    name = channel()
    response = post(client, name, {"event": "row", "text": HTML})
    assert (response.status_code, response.json()) == (201, {"id": f"{name}:1"})
    response = post(client, name, {"data": HTML})
    assert response.status_code == 201
    assert stored(name) == [("row", HTML, True), ("message", json.dumps(HTML), False)]


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        ({"text": 1}, '"text" must be a string'),
        ({"text": None}, '"text" must be a string'),
        ({"text": "a", "data": "a"}, 'both "data" and "text"'),
        ({"event": "t"}, 'no "data" field'),
        ({"text": "a\u0000"}, "NUL"),
    ],
)
def test_http_bad_text_is_400(client: Client, settings, body, reason: str) -> None:
    settings.EVENTS_PUBLISH_TOKEN = TOKEN
    name = channel()
    response = post(client, name, body)
    assert response.status_code == 400
    assert reason in response.json()["error"]
    assert stored(name) == []


# The admin: add, re-send, list, search


def test_admin_add_form_sends_text(admin_client: Client) -> None:
    name = channel()
    response = admin_client.post(
        "/admin/events/event/add/",
        {"channel": name, "type": "row", "raw": "on", "data": "<li>a</li>\r\n<li>b</li>", "_save": "Save"},
    )
    assert response.status_code == 302, response.content
    # Not JSON: the same form without "text" ticked refuses it.
    response = admin_client.post(
        "/admin/events/event/add/", {"channel": name, "type": "row", "data": "<li>a</li>", "_save": "Save"}
    )
    assert response.status_code == 200 and "Not valid JSON" in response.content.decode()
    assert stored(name) == [("row", "<li>a</li>\n<li>b</li>", True)]


def test_admin_resend_keeps_text_and_log_shows_and_searches_it(admin_client: Client) -> None:
    name = channel()
    first = send_event(name, "<em>needle-html</em>", event="row", raw=True)
    send_event(name, {"json": 1})
    response = admin_client.post(
        "/admin/events/event/",
        {"action": "send_again", "_selected_action": [first.pk], "index": 0},
    )
    assert response.status_code == 302
    assert stored(name)[2] == ("row", "<em>needle-html</em>", True)
    page = admin_client.get("/admin/events/event/", {"q": "needle-html"}).content.decode()
    assert f"{name}:1" in page and f"{name}:3" in page and f"{name}:2" not in page
    assert "&lt;em&gt;needle-html&lt;/em&gt;" in page  # shown as text, escaped
    assert "<em>needle-html</em>" not in page
    texts = admin_client.get("/admin/events/event/", {"raw__exact": "1", "q": name}).content.decode()
    assert f"{name}:1" in texts and f"{name}:2" not in texts
