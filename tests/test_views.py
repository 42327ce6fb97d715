"""The Django views: POST /events/<channel>/ (README "Publishing over HTTP"), /feed/ and /healthz."""

from __future__ import annotations

import json
from typing import Any

import pytest
from django.test import Client

from events.models import Event
from tests.layer_probe import GroupListener, layer_without_redis
from tests.streams import channel

pytestmark = pytest.mark.django_db(transaction=True)

TOKEN = "s3cret-publish-token"
ARRIVE = 3.0
QUIET = 0.5
ORIGIN = "https://app.example.com"


def post(
    client: Client,
    name: str,
    body: Any,
    token: str | None = TOKEN,
    content_type: str = "application/json",
    **headers: str,
):
    raw = body if isinstance(body, (str, bytes)) else json.dumps(body)
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    return client.post(f"/events/{name}/", raw, content_type=content_type, headers=headers)


def assert_json_error(response, status: int) -> str:
    assert response.status_code == status, response.content
    assert response["Content-Type"] == "application/json"
    body = response.json()
    assert set(body) == {"error"}
    assert isinstance(body["error"], str) and body["error"]
    return body["error"]


@pytest.fixture(autouse=True)
def publish_token(settings) -> str:
    settings.EVENTS_PUBLISH_TOKEN = TOKEN
    return TOKEN


def add_event_permission():
    from django.contrib.auth.models import Permission

    return Permission.objects.get(codename="add_event", content_type__app_label="events")


@pytest.fixture
def staff(django_user_model):
    """A staff user who may publish: the admin's add permission for events."""
    user = django_user_model.objects.create_user("staff", password="pw", is_staff=True)
    user.user_permissions.add(add_event_permission())
    return user


@pytest.fixture
def csrf_client(staff) -> tuple[Client, str]:
    """A staff session on a client that enforces CSRF, and its CSRF token."""
    client = Client(enforce_csrf_checks=True)
    client.force_login(staff)
    # The admin index has a logout form, so rendering it sets the csrftoken cookie.
    assert client.get("/admin/").status_code == 200
    return client, client.cookies["csrftoken"].value


# Publishing with a bearer token


def test_bearer_publish_stores_and_broadcasts(client: Client) -> None:
    name = channel()
    with GroupListener(name) as listener:
        response = post(client, name, {"event": "order-paid", "data": {"id": 42}})
        received = listener.messages(count=1, timeout=ARRIVE)
    assert response.status_code == 201
    assert response["Content-Type"] == "application/json"
    assert response.json() == {"id": f"{name}:1"}
    assert received == [
        {"type": "events.event", "channel": name, "seq": 1, "event": "order-paid", "data": '{"id":42}'}
    ]
    assert Event.objects.filter(channel=name, seq=1, type="order-paid", data='{"id":42}').exists()


@pytest.mark.parametrize("debug", [True, False])
def test_publish_without_the_trailing_slash_is_the_same_endpoint(client: Client, settings, debug) -> None:
    # With APPEND_SLASH, Django would refuse (DEBUG: a 500) or redirect (losing the body).
    settings.DEBUG = debug
    name = channel()
    response = client.post(
        f"/events/{name}",
        '{"data": 1}',
        content_type="application/json",
        headers={"Authorization": f"Bearer {TOKEN}"},
    )
    assert response.status_code == 201, response.content
    assert response.json() == {"id": f"{name}:1"}


def test_event_type_defaults_to_message(client: Client) -> None:
    name = channel()
    with GroupListener(name) as listener:
        assert post(client, name, {"data": "hi"}).json() == {"id": f"{name}:1"}
        assert post(client, name, {"data": None}).json() == {"id": f"{name}:2"}
        received = listener.messages(count=2, timeout=ARRIVE)
    assert [(m["event"], m["data"]) for m in received] == [("message", '"hi"'), ("message", "null")]


def test_bearer_scheme_is_case_insensitive(client: Client) -> None:
    name = channel()
    response = client.post(
        f"/events/{name}/",
        '{"data": 1}',
        content_type="application/json",
        headers={"Authorization": f"bearer {TOKEN}"},
    )
    assert response.status_code == 201


@pytest.mark.parametrize(
    "token", ["wrong", TOKEN + "x", TOKEN[:-1], TOKEN.upper()], ids=["wrong", "longer", "shorter", "case"]
)
def test_wrong_token_is_403(client: Client, token: str) -> None:
    name = channel()
    with GroupListener(name) as listener:
        error = assert_json_error(post(client, name, {"data": 1}, token=token), 403)
        assert listener.messages(timeout=QUIET) == []
    assert "token" in error
    assert not Event.objects.filter(channel=name).exists()


def test_no_credentials_is_401(client: Client) -> None:
    name = channel()
    response = post(client, name, {"data": 1}, token=None)
    assert "authentication required" in assert_json_error(response, 401)
    assert response["WWW-Authenticate"] == 'Bearer realm="events"'
    assert not Event.objects.filter(channel=name).exists()


def test_other_authorization_scheme_is_401(client: Client) -> None:
    name = channel()
    response = client.post(
        f"/events/{name}/",
        '{"data": 1}',
        content_type="application/json",
        headers={"Authorization": "Basic eDp5"},
    )
    assert_json_error(response, 401)
    assert not Event.objects.filter(channel=name).exists()


def test_no_token_configured_refuses_every_bearer(client: Client, settings) -> None:
    settings.EVENTS_PUBLISH_TOKEN = ""
    name = channel()
    for token in ["anything", TOKEN]:
        assert_json_error(post(client, name, {"data": 1}, token=token), 403)
    assert not Event.objects.filter(channel=name).exists()


# Publishing with a staff session


def test_staff_session_without_csrf_token_is_403(csrf_client: tuple[Client, str]) -> None:
    client, _ = csrf_client
    name = channel()
    response = client.post(f"/events/{name}/", '{"data": 1}', content_type="application/json")
    assert "CSRF" in assert_json_error(response, 403)
    assert not Event.objects.filter(channel=name).exists()


def test_staff_session_with_wrong_csrf_token_is_403(csrf_client: tuple[Client, str]) -> None:
    client, token = csrf_client
    name = channel()
    wrong = ("b" if token[0] == "a" else "a") + token[1:]
    response = client.post(
        f"/events/{name}/", '{"data": 1}', content_type="application/json", headers={"X-CSRFToken": wrong}
    )
    assert_json_error(response, 403)
    assert not Event.objects.filter(channel=name).exists()


def test_staff_session_with_csrf_token_publishes(csrf_client: tuple[Client, str]) -> None:
    client, token = csrf_client
    name = channel()
    with GroupListener(name) as listener:
        response = client.post(
            f"/events/{name}/",
            '{"event": "note", "data": {"by": "staff"}}',
            content_type="application/json",
            headers={"X-CSRFToken": token},
        )
        received = listener.messages(count=1, timeout=ARRIVE)
    assert response.status_code == 201, response.content
    assert response.json() == {"id": f"{name}:1"}
    assert [(m["event"], m["data"]) for m in received] == [("note", '{"by":"staff"}')]


def session_post(user, name: str) -> Any:
    client = Client()
    client.force_login(user)
    return client.post(f"/events/{name}/", '{"data": 1}', content_type="application/json")


def test_staff_without_the_add_permission_is_403(django_user_model) -> None:
    """A staff user the admin would refuse (no permissions) cannot publish either."""
    user = django_user_model.objects.create_user("bare", password="pw", is_staff=True)
    for name in (channel(), f"user-{user.pk + 1}", "private-ops"):
        assert "events.add_event" in assert_json_error(session_post(user, name), 403)
        assert not Event.objects.filter(channel=name).exists()


def test_default_publish_policy_keeps_user_and_private_channels_for_superusers(
    staff, django_user_model
) -> None:
    other = django_user_model.objects.create_user("other", password="pw")
    for name in (f"user-{other.pk}", f"user-{staff.pk}", "private-ops"):
        assert "not allowed to publish" in assert_json_error(session_post(staff, name), 403)
        assert not Event.objects.filter(channel=name).exists()
    assert session_post(staff, channel()).status_code == 201
    root = django_user_model.objects.create_superuser("root", password="pw")
    assert session_post(root, f"user-{other.pk}").status_code == 201
    assert session_post(root, "private-ops").status_code == 201


def only_orders(user, channel: str) -> bool:
    return channel == "orders"


def test_publish_policy_setting_decides(staff, settings) -> None:
    settings.EVENTS_PUBLISH_POLICY = "tests.test_views.only_orders"
    assert session_post(staff, "orders").status_code == 201
    assert "not allowed to publish" in assert_json_error(session_post(staff, "news"), 403)
    # The bearer token is not a user: the policy is not asked.
    assert post(Client(), "news", {"data": 1}).status_code == 201


def test_non_staff_user_is_403(django_user_model) -> None:
    user = django_user_model.objects.create_user("plain", password="pw")
    client = Client()
    client.force_login(user)
    name = channel()
    response = client.post(f"/events/{name}/", '{"data": 1}', content_type="application/json")
    assert "staff" in assert_json_error(response, 403)
    assert not Event.objects.filter(channel=name).exists()


def test_inactive_staff_user_is_refused(django_user_model) -> None:
    user = django_user_model.objects.create_user("gone", password="pw", is_staff=True, is_active=False)
    client = Client()
    client.force_login(user)
    name = channel()
    response = client.post(f"/events/{name}/", '{"data": 1}', content_type="application/json")
    assert response.status_code in (401, 403)
    assert_json_error(response, response.status_code)
    assert not Event.objects.filter(channel=name).exists()


# Bad requests


@pytest.mark.parametrize(
    ("body", "match"),
    [
        ("{not json", "not valid JSON"),
        ("", "not valid JSON"),
        (b"\xff\xfe{}", "not valid JSON"),
        ("[1, 2]", "must be a JSON object"),
        ('"data"', "must be a JSON object"),
        ("null", "must be a JSON object"),
        ('{"event": "t"}', 'no "data" field (or "text" for text)'),
        ('{"data": 1, "extra": 2, "channel": "x"}', "unknown field(s): channel, extra"),
        ('{"event": "bad type", "data": 1}', "event type 'bad type' may only contain"),
        ('{"event": "", "data": 1}', "must be 1 to 64 characters"),
        ('{"event": 5, "data": 1}', "event type must be a string, not int"),
        ('{"data": NaN}', "not JSON-serialisable"),
    ],
    ids=[
        "bad-json",
        "empty-body",
        "not-utf8",
        "array",
        "string",
        "null",
        "missing-data",
        "unknown-fields",
        "bad-event-type",
        "empty-event-type",
        "event-type-not-string",
        "nan",
    ],
)
def test_bad_body_is_400(client: Client, body: str | bytes, match: str) -> None:
    name = channel()
    with GroupListener(name) as listener:
        error = assert_json_error(post(client, name, body), 400)
        assert listener.messages(timeout=QUIET) == []
    assert match in error
    assert not Event.objects.filter(channel=name).exists()


@pytest.mark.parametrize(
    "body",
    ["[" * 100_000, '{"data": ' + "[" * 100_000 + "]" * 100_000 + "}"],
    ids=["unclosed-nesting", "nested-data"],
)
def test_deeply_nested_body_is_400_json(body: str) -> None:
    client = Client(raise_request_exception=False)
    name = channel()
    assert_json_error(post(client, name, body), 400)
    assert not Event.objects.filter(channel=name).exists()


def test_body_over_the_upload_limit_is_413_json(settings) -> None:
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 1000
    client = Client(raise_request_exception=False)
    name = channel()
    assert_json_error(post(client, name, {"data": "x" * 2000}), 413)
    assert not Event.objects.filter(channel=name).exists()


def test_payload_too_large_is_400(client: Client, settings) -> None:
    settings.EVENTS_MAX_PAYLOAD_BYTES = 50
    name = channel()
    assert post(client, name, {"data": "x" * 48}).status_code == 201
    error = assert_json_error(post(client, name, {"data": "x" * 49}), 400)
    assert "over the limit of 50 bytes" in error
    assert list(Event.objects.filter(channel=name).values_list("seq", flat=True)) == [1]


@pytest.mark.parametrize(
    "path",
    ["/events/bad%20name/", "/events/" + "x" * 81 + "/", "/events/caf%C3%A9/", "/events/a.b:c/"],
    ids=["space", "too-long", "non-ascii", "colon"],
)
def test_bad_channel_is_400(client: Client, path: str) -> None:
    before = Event.objects.count()
    response = client.post(
        path, '{"data": 1}', content_type="application/json", headers={"Authorization": f"Bearer {TOKEN}"}
    )
    assert "channel" in assert_json_error(response, 400)
    assert Event.objects.count() == before


@pytest.mark.parametrize("path", ["/events/a%2Fb/", "/events/a/b/"], ids=["encoded-slash", "slash"])
def test_channel_with_a_slash_is_400_json(client: Client, path: str) -> None:
    response = client.post(
        path, '{"data": 1}', content_type="application/json", headers={"Authorization": f"Bearer {TOKEN}"}
    )
    assert "channel" in assert_json_error(response, 400)


@pytest.mark.parametrize("method", ["put", "patch", "delete"])
def test_other_methods_are_405(client: Client, method: str) -> None:
    name = channel()
    response = getattr(client, method)(
        f"/events/{name}/",
        '{"data": 1}',
        content_type="application/json",
        headers={"Authorization": f"Bearer {TOKEN}"},
    )
    assert "not allowed" in assert_json_error(response, 405)
    assert "POST" in response["Allow"]
    assert not Event.objects.filter(channel=name).exists()


# CORS


def test_preflight_from_a_listed_origin(client: Client, settings) -> None:
    settings.EVENTS_ALLOWED_ORIGINS = [ORIGIN]
    response = client.options(
        f"/events/{channel()}/",
        headers={
            "Origin": ORIGIN,
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization, content-type",
        },
    )
    assert response.status_code == 204
    assert response["Access-Control-Allow-Origin"] == ORIGIN
    assert not response.has_header("Access-Control-Allow-Credentials")  # a separate list
    settings.EVENTS_CREDENTIALED_ORIGINS = [ORIGIN]
    credentialed = client.options(
        f"/events/{channel()}/", headers={"Origin": ORIGIN, "Access-Control-Request-Method": "POST"}
    )
    assert credentialed["Access-Control-Allow-Credentials"] == "true"
    assert "POST" in response["Access-Control-Allow-Methods"]
    allowed_headers = response["Access-Control-Allow-Headers"].lower()
    assert "authorization" in allowed_headers and "content-type" in allowed_headers
    assert "Origin" in response["Vary"]


@pytest.mark.parametrize(
    "origin",
    ["https://evil.example.com", ORIGIN + "/", "http://app.example.com", "null"],
    ids=["other-host", "trailing-slash", "other-scheme", "null"],
)
def test_preflight_from_an_unlisted_origin(client: Client, settings, origin: str) -> None:
    settings.EVENTS_ALLOWED_ORIGINS = [ORIGIN]
    response = client.options(
        f"/events/{channel()}/", headers={"Origin": origin, "Access-Control-Request-Method": "POST"}
    )
    assert response.status_code < 500
    assert not response.has_header("Access-Control-Allow-Origin")
    assert not response.has_header("Access-Control-Allow-Methods")
    assert not response.has_header("Access-Control-Allow-Credentials")


def test_no_origins_listed_by_default(client: Client) -> None:
    response = client.options(
        f"/events/{channel()}/", headers={"Origin": ORIGIN, "Access-Control-Request-Method": "POST"}
    )
    assert not response.has_header("Access-Control-Allow-Origin")


def test_publish_response_carries_cors_headers_for_a_listed_origin(client: Client, settings) -> None:
    settings.EVENTS_ALLOWED_ORIGINS = [ORIGIN]
    name = channel()
    ok = post(client, name, {"data": 1}, Origin=ORIGIN)
    assert ok.status_code == 201
    assert ok["Access-Control-Allow-Origin"] == ORIGIN
    assert "Origin" in ok["Vary"]
    # Rejections carry them too, so the page can read the JSON reason.
    refused = post(client, name, {"data": 1}, token="wrong", Origin=ORIGIN)
    assert_json_error(refused, 403)
    assert refused["Access-Control-Allow-Origin"] == ORIGIN
    other = post(client, name, {"data": 1}, Origin="https://evil.example.com")
    assert other.status_code == 201
    assert not other.has_header("Access-Control-Allow-Origin")


# /healthz


def test_healthz_ok(client: Client, admin_client: Client) -> None:
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}  # details are for staff
    assert admin_client.get("/healthz").json() == {"status": "ok", "database": "ok", "channel_layer": "ok"}


def test_healthz_503_when_the_channel_layer_is_down(client: Client, admin_client: Client) -> None:
    with layer_without_redis():
        response = client.get("/healthz")
        staff_view = admin_client.get("/healthz")
    assert response.status_code == staff_view.status_code == 503
    assert response.json() == {"status": "unavailable"}
    body = staff_view.json()
    assert body["status"] == "unavailable"
    assert body["database"] == "ok"
    assert body["channel_layer"].startswith("failed")
    # And healthy again once the layer is back.
    assert client.get("/healthz").status_code == 200


# /feed/


def feed_config(html: str) -> dict[str, Any]:
    """The JSON the feed page hands its script (json_script "feed-config")."""
    start = html.index('<script id="feed-config" type="application/json">') + len(
        '<script id="feed-config" type="application/json">'
    )
    return json.loads(html[start : html.index("</script>", start)])


def test_feed_page(client: Client) -> None:
    response = client.get("/feed/")
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/html")
    html = response.content.decode()
    assert "<code>public</code>" in html
    assert '<script type="module" src="/static/events/feed.js">' in html
    assert feed_config(html)["channels"] == ["public"]


def test_feed_page_lists_the_requested_channels_and_known_types(client: Client) -> None:
    a, b = channel(), channel()
    post(client, a, {"event": "order-paid", "data": 1})
    post(client, a, {"event": "order-paid", "data": 2})
    response = client.get("/feed/", {"channel": [a, b, a]})
    assert response.status_code == 200
    config = feed_config(response.content.decode())
    assert config == {"channels": [a, b], "types": ["order-paid"], "position": f"{a}:2,{b}:0"}


@pytest.mark.parametrize(
    "query",
    ["channel=bad%20name", "channel=ok&channel=bad/name", "channel=" + "x" * 81],
    ids=["space", "one-bad", "too-long"],
)
def test_feed_bad_channel_is_400(client: Client, query: str) -> None:
    response = client.get(f"/feed/?{query}")
    assert "channel" in assert_json_error(response, 400)


def test_feed_too_many_channels_is_400(client: Client, settings) -> None:
    settings.EVENTS_MAX_CHANNELS_PER_STREAM = 2
    response = client.get("/feed/", {"channel": ["a", "b", "c"]})
    assert "at most 2" in assert_json_error(response, 400)


def test_form_bodies_are_415_not_500(staff) -> None:
    """Multipart from a staff session used to be a 500 (the CSRF check reads it as a
    form first); any body that is not JSON is answered 415 with a reason."""
    client = Client()
    client.force_login(staff)
    name = channel()
    response = client.post(f"/events/{name}/", {"data": "1"})  # multipart/form-data
    assert "application/json" in assert_json_error(response, 415)
    response = client.post(f"/events/{name}/", "data=1", content_type="application/x-www-form-urlencoded")
    assert_json_error(response, 415)
    response = post(Client(), name, '{"data": 1}', content_type="text/plain")
    assert_json_error(response, 415)
    assert not Event.objects.filter(channel=name).exists()
    ok = post(Client(), name, '{"data": 1}', content_type="application/merge-patch+json")
    assert ok.status_code == 201
