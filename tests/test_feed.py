"""The feed page's server side: /feed/ (position, types, refusal), /feed/types/ and its
static files. Its behaviour in a browser is tested in tests/e2e/test_browser.py."""

from __future__ import annotations

import json

import pytest
from django.test import Client

from events import send_event
from tests.streams import channel

pytestmark = pytest.mark.django_db


def config(response) -> dict:
    html = response.content.decode()
    marker = '<script id="feed-config" type="application/json">'
    start = html.index(marker) + len(marker)
    return json.loads(html[start : html.index("</script>", start)])


def test_feed_starts_from_the_position_it_was_rendered_at(client: Client) -> None:
    a, b = channel(), channel()
    for n in range(3):
        send_event(a, n)
    send_event(b, "x", event="note")
    response = client.get("/feed/", {"channel": [b, a]})
    assert response.status_code == 200
    assert config(response) == {"channels": [b, a], "types": ["message", "note"], "position": f"{b}:1,{a}:3"}


def test_feed_types_are_distinct_despite_the_default_ordering(client: Client, settings) -> None:
    """Event.Meta.ordering joined SELECT DISTINCT, so one busy type filled the whole list."""
    a = channel()
    for _ in range(5):
        send_event(a, 1, event="busy")
    send_event(a, 1, event="rare")
    assert config(client.get("/feed/", {"channel": a}))["types"] == ["busy", "rare"]


def test_feed_adds_valid_types_from_the_query(client: Client) -> None:
    a = channel()
    response = client.get("/feed/", {"channel": a, "type": ["order-paid", "bad type"]})
    assert config(response)["types"] == ["order-paid"]


def test_feed_of_a_channel_the_user_may_not_read(client: Client) -> None:
    response = client.get("/feed/", {"channel": ["public", "private-ops"]})
    assert response.status_code == 403
    html = response.content.decode()
    assert "You may not read the channel <code>private-ops</code>" in html
    assert "feed-config" not in html  # no stream is attempted
    assert 'href="/admin/login/?next=' in html


def test_feed_of_a_private_channel_for_staff(admin_client: Client) -> None:
    response = admin_client.get("/feed/", {"channel": "private-ops"})
    assert response.status_code == 200
    assert config(response)["channels"] == ["private-ops"]


def test_feed_page_landmarks_and_live_regions(client: Client) -> None:
    html = client.get("/feed/").content.decode()
    for needle in (
        '<html lang="en">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        '<header class="top">',
        '<main id="main">',
        '<footer class="bottom">',
        'href="#events">Skip to the events</a>',
        'id="state" class="state" role="status"',
        'id="notice" class="notice" role="alert" hidden',
        'aria-live="polite" aria-atomic="true"',
        'id="pause" type="button" aria-pressed="false"',
    ):
        assert needle in html, needle


def test_feed_types_endpoint(client: Client) -> None:
    a = channel()
    send_event(a, 1, event="order-paid")
    response = client.get("/feed/types/", {"channel": a})
    assert response.status_code == 200
    assert response.json() == {"types": ["order-paid"]}


@pytest.mark.parametrize(
    ("query", "status"),
    [("channel=bad%20name", 400), ("channel=private-ops", 403)],
    ids=["bad-name", "not-readable"],
)
def test_feed_types_endpoint_refusals(client: Client, query: str, status: int) -> None:
    response = client.get(f"/feed/types/?{query}")
    assert response.status_code == status
    assert response["Content-Type"] == "application/json"
    assert set(response.json()) == {"error"}


@pytest.mark.parametrize(
    ("path", "content_type"),
    [
        ("/static/events/feed.js", "text/javascript"),
        ("/static/events/feed-stream.js", "text/javascript"),
        ("/static/events/feed-worker.js", "text/javascript"),
        ("/static/events/feed.css", "text/css"),
    ],
)
def test_feed_static_files_are_served(client: Client, path: str, content_type: str) -> None:
    response = client.get(path)
    assert response.status_code == 200
    assert response["Content-Type"].startswith(content_type)
    body = b"".join(response.streaming_content) if response.streaming else response.content
    assert body.strip()
    response.close()


def failing_policy(user, channel_name):
    raise RuntimeError("the policy's database is down")


@pytest.mark.parametrize("path", ["/feed/", "/feed/types/"])
def test_a_failing_policy_is_503_json_not_500(client: Client, settings, path: str, caplog) -> None:
    settings.EVENTS_CHANNEL_POLICY = "tests.test_feed.failing_policy"
    response = client.get(f"{path}?channel=orders")
    assert response.status_code == 503
    assert "try again" in response.json()["error"]
    assert "the channel policy failed" in caplog.text


@pytest.mark.parametrize("path", ["/feed/", "/feed/types/"])
def test_too_many_query_parameters_is_400_json(client: Client, path: str) -> None:
    query = "&".join(f"channel=c{n}" for n in range(1500))
    response = client.get(f"{path}?{query}")
    assert response.status_code == 400
    assert response["Content-Type"] == "application/json"
    assert "too many" in response.json()["error"]


def test_feed_page_has_a_content_security_policy(client: Client) -> None:
    for response in (client.get(f"/feed/?channel={channel()}"), client.get("/feed/?channel=private-x")):
        policy = response["Content-Security-Policy"]
        assert "script-src 'self'" in policy and "default-src 'self'" in policy
        assert "unsafe-inline" not in policy


def test_operator_hints_only_under_debug(client: Client, settings) -> None:
    name = channel()
    settings.DEBUG = False
    html = client.get(f"/feed/?channel={name}").content.decode()
    assert "manage.py send_event" not in html and "demo orders" not in html
    settings.DEBUG = True
    html = client.get(f"/feed/?channel={name}").content.decode()
    assert f"manage.py send_event {name}" in html
