"""The app as any project wires it: events.urls, events.asgi.with_streams and the checks
that tell a project it has not, the templates inside the app, `manage.py serve` on the
project's own ASGI application. The whole path from a fresh startproject is
tests/e2e/test_install.py."""

from __future__ import annotations

import ast
import io
import json
import os
import subprocess
import sys

import pytest
from django.conf import settings as django_settings
from django.core.management import CommandError, call_command
from django.test import AsyncClient, Client, override_settings
from django.urls import reverse

from events import checks, send_event
from events.asgi import is_wrapped, with_streams
from tests.servers import ROOT
from tests.streams import channel

pytestmark = pytest.mark.django_db
THIS = sys.modules[__name__]
# The templates a project without a templates/ of its own has: the apps' (the site's
# templates/ adds a link to its demo to the feed page).
app_templates_only = override_settings(
    TEMPLATES=[{**django_settings.TEMPLATES[0], "DIRS": []}],
)


def ids(messages) -> list[str]:
    return [message.id for message in messages]


# -- events.urls -----------------------------------------------------------------


@override_settings(ROOT_URLCONF="tests.urls_app_only")
def test_include_gives_publish_feed_types_presence_and_healthz() -> None:
    assert reverse("events:feed") == "/feed/"
    assert reverse("events:feed-types") == "/feed/types/"
    assert reverse("events:presence") == "/presence/"
    assert reverse("events:healthz") == "/healthz"
    assert reverse("events:publish", kwargs={"channel": "orders"}) == "/events/orders"


@app_templates_only
@override_settings(ROOT_URLCONF="tests.urls_app_only", EVENTS_PUBLISH_TOKEN="t0ken")
def test_a_project_with_only_events_urls_publishes_and_renders_the_feed(client: Client) -> None:
    name = channel()
    response = client.post(
        f"/events/{name}/",
        '{"data": 1}',
        content_type="application/json",
        headers={"Authorization": "Bearer t0ken"},
    )
    assert response.status_code == 201, response.content
    # No admin and no demo in this project: the page links to neither (it used to fail
    # with NoReverseMatch on the demo's admin URL).
    feed = client.get("/feed/", {"channel": name})
    assert feed.status_code == 200
    html = feed.content.decode()
    assert "demo" not in html.lower() and "/admin/" not in html
    assert client.get("/feed/types/", {"channel": name}).json() == {"types": ["message"]}
    assert client.get("/presence/").status_code == 403  # staff only, and routed


@app_templates_only
def test_the_apps_feed_template_names_nothing_of_the_demo(client: Client) -> None:
    # The empty page's hints are for operators: shown under DEBUG. (Not the `settings`
    # fixture: its override would outlive this test's TEMPLATES override.)
    with override_settings(DEBUG=True):
        html = client.get("/feed/").content.decode()
    assert "demo" not in html.lower()
    assert 'href="/admin/events/event/add/?channel=public"' in html  # the app's own hint


def test_the_site_adds_its_demo_link_through_the_apps_template(client: Client, settings) -> None:
    settings.DEBUG = True  # the empty page's hints are for operators: shown under DEBUG
    html = client.get("/feed/").content.decode()
    assert 'href="/admin/demo/order/"' in html
    assert 'id="feed-config"' in html  # the rest is the app's page


@override_settings(ROOT_URLCONF="tests.urls_admin_only")
def test_the_event_log_renders_without_events_urls(admin_client: Client) -> None:
    event = send_event(channel(), 1)
    assert admin_client.get("/admin/events/event/").status_code == 200
    change = admin_client.get(f"/admin/events/event/{event.pk}/change/")
    assert change.status_code == 200
    assert "View on site" not in change.content.decode()  # no button to a missing page


# -- a stream request that reaches Django -----------------------------------------


def test_a_stream_request_over_wsgi_names_the_fix(client: Client) -> None:
    response = client.get(f"/events/{channel()}/")
    assert response.status_code == 500
    reason = json.loads(response.content)["error"]
    assert "WSGI" in reason and "daphne" in reason and "with_streams" in reason


async def test_a_stream_request_to_an_unwrapped_asgi_app_names_the_fix() -> None:
    # django.test.AsyncClient goes through Django's ASGI handler alone, as a project's
    # asgi.py does before it is wrapped.
    response = await AsyncClient().get(f"/events/{channel()}/")
    assert response.status_code == 500
    reason = json.loads(response.content)["error"]
    assert "does not route streams" in reason
    assert "application = with_streams(get_asgi_application())" in reason


# -- manage.py check: is the ASGI application wrapped? ------------------------------


async def plain_django(scope, receive, send) -> None:  # stands in for get_asgi_application()
    raise AssertionError("not called")


class Middleware:
    """A typical ASGI middleware: keeps the application it wraps as `.app`."""

    def __init__(self, app) -> None:
        self.app = app

    async def __call__(self, scope, receive, send) -> None:
        await self.app(scope, receive, send)


def test_the_sites_asgi_application_passes() -> None:
    assert checks.check_streams_routed() == []


def test_an_unwrapped_asgi_application_is_flagged(settings) -> None:
    settings.ASGI_APPLICATION = "tests.test_app_wiring.plain_django"
    [warning] = checks.check_streams_routed()
    assert warning.id == "events.W030"
    assert "with_streams(get_asgi_application())" in warning.hint


def test_a_wrapped_application_inside_middleware_passes(settings, monkeypatch) -> None:
    monkeypatch.setattr(THIS, "wrapped", Middleware(Middleware(with_streams(plain_django))), raising=False)
    settings.ASGI_APPLICATION = "tests.test_app_wiring.wrapped"
    assert checks.check_streams_routed() == []
    assert not is_wrapped(Middleware(plain_django))


def test_an_unimportable_asgi_application_is_named(settings) -> None:
    settings.ASGI_APPLICATION = "tests.no_such_module.application"
    assert ids(checks.check_streams_routed()) == ["events.W032"]


def test_without_asgi_application_the_asgi_module_beside_the_settings_is_checked(
    settings, monkeypatch
) -> None:
    settings.ASGI_APPLICATION = None
    assert checks._project_asgi_application() == "site_config.asgi.application"
    assert checks.check_streams_routed() == []
    monkeypatch.setenv("DJANGO_SETTINGS_MODULE", "tests.settings_elsewhere")
    assert checks._project_asgi_application() is None  # no tests/asgi.py: nothing to tell


# -- EVENTS_EMBEDDED_REDIS ---------------------------------------------------------


def test_embedded_redis_must_be_a_path(settings) -> None:
    settings.EVENTS_EMBEDDED_REDIS = 6379
    assert ids(checks.check_embedded_redis_setting()) == ["events.E030"]


def test_embedded_redis_the_layer_does_not_use_is_flagged(settings, tmp_path) -> None:
    settings.EVENTS_EMBEDDED_REDIS = tmp_path / "redis.sock"
    assert ids(checks.check_embedded_redis_setting()) == ["events.W031"]
    layer = settings.CHANNEL_LAYERS["default"]
    settings.CHANNEL_LAYERS = {"default": {**layer, "CONFIG": {"hosts": [f"unix://{tmp_path}/redis.sock"]}}}
    assert checks.check_embedded_redis_setting() == []


def test_serve_needs_the_projects_asgi_application(settings) -> None:
    settings.ASGI_APPLICATION = None
    with pytest.raises(CommandError, match="ASGI_APPLICATION is not set"):
        call_command("serve", stdout=io.StringIO())


def test_serve_runs_the_projects_own_asgi_application(settings) -> None:
    from events.management.commands.serve import asgi_target

    settings.ASGI_APPLICATION = "mysite.asgi.application"
    assert asgi_target() == "mysite.asgi:application"


# -- importable from settings.py and the top of asgi.py ------------------------------


def test_settings_and_asgi_imports_need_no_django_set_up() -> None:
    """settings.py imports events.layers, and asgi.py may import events.asgi before
    get_asgi_application(): neither may load Django's models or database layer."""
    code = (
        "import sys; from events.layers import channel_layers; from events.asgi import with_streams; "
        "assert not [m for m in sys.modules if m.startswith(('django.db', 'events.models', 'channels'))], "
        "sorted(m for m in sys.modules if m.startswith(('django', 'events', 'channels')));"
        "print(channel_layers('redis://h:1/0', prefix='p'))"
    )
    env = {key: value for key, value in os.environ.items() if key != "DJANGO_SETTINGS_MODULE"}
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert ast.literal_eval(result.stdout) == {
        "default": {
            "BACKEND": "channels_redis.pubsub.RedisPubSubChannelLayer",
            "CONFIG": {"hosts": ["redis://h:1/0"], "prefix": "p"},
        }
    }


def test_send_event_is_still_importable_from_the_package() -> None:
    from events import asend_event, publish
    from events import send_event as imported

    assert (imported, asend_event) == (publish.send_event, publish.asend_event)
