"""GET /metrics and the figures behind it (events/metrics.py), in one process.

Every figure is read as a difference before/after, through the same registry a scrape
reads, so the tests hold whichever tests ran before them.
"""

from __future__ import annotations

import asyncio
import io
import json
import re
from collections.abc import AsyncIterator

import pytest
from asgiref.sync import sync_to_async
from channels.layers import channel_layers
from django.core.management import call_command
from django.test import override_settings
from prometheus_client.parser import text_string_to_metric_families

from events import asend_event, broadcaster, liveness, metrics, send_event, send_events, store
from events.checks import check_metrics_token, check_settings
from events.hub import close_hub
from events.tokens import make_token
from site_config.asgi import application
from tests.layer_probe import layer_without_redis
from tests.servers import ROOT, RedisServer
from tests.streams import Stream, channel, open_live

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("hub_cleanup")]

TOKEN = "metrics-token-" + "x" * 32
# Every family /metrics must show (the list), as the parser names them.
FAMILIES = {
    "events_streams_open": "gauge",
    "events_streams_opened": "counter",
    "events_streams_closed": "counter",
    "events_streams_rejected": "counter",
    "events_published": "counter",
    "events_deliveries": "counter",
    "events_written_bytes": "counter",
    "events_replays": "counter",
    "events_replayed_events": "counter",
    "events_stream_resets": "counter",
    "events_gap_fills": "counter",
    "events_gap_filled_events": "counter",
    "events_layer_lost": "counter",
    "events_hubs": "gauge",
    "events_broadcast_failures": "counter",
    "events_broadcast_skips": "counter",
    "events_publish_latency_seconds": "histogram",
    "events_delivery_lag_seconds": "histogram",
}


def value(name: str, **labels: str) -> float:
    """One sample as a scrape would read it (0 when it has not been written yet)."""
    for family in metrics.registry().collect():
        for sample in family.samples:
            if sample.name == name and sample.labels == labels:
                return float(sample.value)
    return 0.0


class Delta:
    """Samples read before and after: `delta.of(name, **labels)` is the change."""

    def __init__(self, *names: tuple[str, dict[str, str]]) -> None:
        self.before = {(name, tuple(sorted(labels.items()))): value(name, **labels) for name, labels in names}

    def of(self, name: str, **labels: str) -> float:
        return value(name, **labels) - self.before[(name, tuple(sorted(labels.items())))]


def watch(*specs: str | tuple[str, dict[str, str]]) -> Delta:
    # What earlier tests wrote and the tally still holds is theirs, not the delta's.
    metrics.flush()
    return Delta(*[(spec, {}) if isinstance(spec, str) else spec for spec in specs])


async def until(predicate, timeout: float = 10) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not await sync_to_async(predicate)():
        assert loop.time() < deadline, "condition not met in time"
        await asyncio.sleep(0.05)


# -- the endpoint ---------------------------------------------------------------------


@pytest.fixture
def staff_client(client, django_user_model):
    user = django_user_model.objects.create_user("ops", password="pw", is_staff=True)
    client.force_login(user)
    return client


@override_settings(EVENTS_METRICS_TOKEN=TOKEN)
def test_metrics_are_403_json_without_staff_or_the_token(client, django_user_model) -> None:
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": f"Bearer {TOKEN}x"}):
        response = client.get("/metrics", headers=headers)
        assert response.status_code == 403, headers
        assert response["Content-Type"] == "application/json"
        assert "error" in response.json()
    user = django_user_model.objects.create_user("someone", password="pw")
    client.force_login(user)
    response = client.get("/metrics")
    assert response.status_code == 403
    assert "staff" in response.json()["error"]


def test_no_token_configured_refuses_every_bearer(client) -> None:
    response = client.get("/metrics", headers={"Authorization": "Bearer "})
    assert response.status_code == 403
    response = client.get("/metrics", headers={"Authorization": "Bearer anything"})
    assert response.status_code == 403


@override_settings(EVENTS_METRICS_TOKEN=TOKEN)
def test_the_token_reads_metrics_and_the_text_parses(client) -> None:
    send_event(channel(), {"n": 1})
    response = client.get("/metrics", headers={"Authorization": f"Bearer {TOKEN}"})
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/plain; version=")
    families = {f.name: f for f in text_string_to_metric_families(response.content.decode())}
    for name, kind in FAMILIES.items():
        assert name in families, name
        assert families[name].type == kind, name
    for family in families.values():
        for sample in family.samples:
            # Bounded label sets only: never a channel name.
            assert "channel" not in sample.labels, sample
    published = families["events_published"].samples
    assert any(s.labels == {"path": "python"} and s.value >= 1 for s in published)


def test_staff_read_metrics_and_other_methods_are_405(staff_client) -> None:
    assert staff_client.get("/metrics").status_code == 200
    response = staff_client.post("/metrics")
    assert response.status_code == 405
    assert response.json()["error"]


def test_the_admin_event_log_shows_the_headline_figures(admin_client) -> None:
    def shown() -> dict[str, int]:
        response = admin_client.get("/admin/events/event/")
        assert response.status_code == 200
        html = response.content.decode()
        assert 'id="metrics"' in html
        rows = re.findall(r"<th[^>]*>([^<]+)</th>\s*<td class=\"count\">([\d,]+)</td>", html)
        return {label: int(count.replace(",", "")) for label, count in rows}

    before = shown()
    send_event(channel(), {"n": 1})
    send_events([{"channel": channel(), "data": n} for n in range(3)])
    after = shown()
    assert after["Events published"] == before["Events published"] + 4
    assert after["Broadcasts failed"] == before["Broadcasts failed"]


# -- settings -------------------------------------------------------------------------


def ids(messages) -> list[str]:
    return [message.id for message in messages]


def test_metrics_token_checks(settings) -> None:
    settings.EVENTS_METRICS_TOKEN = 123
    assert "events.E050" in ids(check_settings())
    assert check_metrics_token() == []
    settings.EVENTS_METRICS_TOKEN = "short"
    assert "events.E050" not in ids(check_settings())
    assert ids(check_metrics_token()) == ["events.W050"]
    settings.EVENTS_METRICS_TOKEN = TOKEN
    assert check_metrics_token() == []
    settings.EVENTS_METRICS_TOKEN = ""
    assert check_metrics_token() == []


# -- publishing -----------------------------------------------------------------------


@override_settings(EVENTS_PUBLISH_TOKEN="publish-token")
def test_events_published_are_counted_by_path(client, admin_client) -> None:
    paths = ("python", "command", "http", "admin")
    delta = watch(*[("events_published_total", {"path": path}) for path in paths])
    name = channel()
    send_event(name, {"from": "python"})
    call_command("send_event", name, '{"from": "command"}', stdout=io.StringIO())
    response = client.post(
        f"/events/{name}/",
        data=json.dumps({"data": {"from": "http"}}),
        content_type="application/json",
        headers={"Authorization": "Bearer publish-token"},
    )
    assert response.status_code == 201
    response = admin_client.post(
        "/admin/events/event/add/", {"channel": name, "type": "message", "data": '{"from": "admin"}'}
    )
    assert response.status_code == 302
    assert [delta.of("events_published_total", path=path) for path in paths] == [1, 1, 1, 1]
    # Outside those blocks, code publishes as python again.
    send_event(name, {"from": "python"})
    assert delta.of("events_published_total", path="python") == 2


def test_publish_latency_is_observed_per_broadcast() -> None:
    delta = watch("events_publish_latency_seconds_count", "events_publish_latency_seconds_sum")
    for n in range(3):
        send_event(channel(), n)
    assert broadcaster.flush(10)  # the publisher thread broadcasts
    assert delta.of("events_publish_latency_seconds_count") == 3
    assert 0 < delta.of("events_publish_latency_seconds_sum") < 3 * 5


def test_broadcast_failures_and_breaker_skips() -> None:
    delta = watch("events_broadcast_failures_total", "events_broadcast_skips_total")
    with layer_without_redis():
        send_event(channel(), "fails")  # the layer cannot reach Redis: the breaker opens
        assert broadcaster.flush(10)
        send_event(channel(), "skipped")  # within BREAKER_SECONDS: not even tried
        assert broadcaster.flush(10)
    assert delta.of("events_broadcast_failures_total") == 1
    assert delta.of("events_broadcast_skips_total") == 1


# -- streams and the hub --------------------------------------------------------------


async def test_a_stream_is_counted_open_delivered_to_and_closed() -> None:
    name = channel()
    delta = watch(
        "events_streams_open",
        "events_streams_opened_total",
        ("events_streams_closed_total", {"reason": "client_gone"}),
        "events_deliveries_total",
        "events_written_bytes_total",
        "events_delivery_lag_seconds_count",
    )
    first, second = await open_live(f"/events/{name}/"), await open_live(f"/events/{name}/")
    assert delta.of("events_streams_opened_total") == 2
    assert delta.of("events_streams_open") == 2
    for n in range(3):
        await asend_event(name, {"n": n})
    await first.events(3)
    await second.events(3)
    assert delta.of("events_deliveries_total") == 6
    # One lag per event and process (after its whole fan-out), not one per stream.
    assert delta.of("events_delivery_lag_seconds_count") == 3
    written = len(first.buffer) + len(second.buffer)
    metrics.flush()  # what the heartbeat tick does (test_the_tally_is_flushed_by_the_heartbeat_tick)
    assert delta.of("events_written_bytes_total") == written
    await first.close()
    await second.close()
    assert delta.of("events_streams_open") == 0
    assert delta.of("events_streams_closed_total", reason="client_gone") == 2


async def test_rejected_streams_are_counted_by_status() -> None:
    delta = watch(
        ("events_streams_rejected_total", {"status": "400"}),
        ("events_streams_rejected_total", {"status": "403"}),
        "events_streams_opened_total",
    )
    bad = await Stream(application, "/events/bad name/").open()
    await bad.body()
    private = await Stream(application, "/events/private-x/").open()
    await private.body()
    assert (bad.status, private.status) == (400, 403)
    assert delta.of("events_streams_rejected_total", status="400") == 1
    assert delta.of("events_streams_rejected_total", status="403") == 1
    assert delta.of("events_streams_opened_total") == 0


async def test_replays_and_resets_are_counted() -> None:
    name = channel()
    for n in range(5):
        await asend_event(name, n)
    delta = watch(
        "events_replays_total",
        "events_replayed_events_total",
        ("events_stream_resets_total", {"reason": "malformed_id"}),
        ("events_stream_resets_total", {"reason": "unknown_id"}),
    )
    resumed = await open_live(f"/events/{name}/", headers=[(b"last-event-id", f"{name}:2".encode())])
    await resumed.events(3)
    await resumed.close()
    assert delta.of("events_replays_total") == 1
    assert delta.of("events_replayed_events_total") == 3
    for last_id in ("garbage", f"{name}:99"):
        reset = await open_live(f"/events/{name}/", headers=[(b"last-event-id", last_id.encode())])
        await reset.events(1)
        await reset.close()
    assert delta.of("events_stream_resets_total", reason="malformed_id") == 1
    assert delta.of("events_stream_resets_total", reason="unknown_id") == 1
    assert delta.of("events_replays_total") == 1  # a reset replays nothing
    at_head = await open_live(f"/events/{name}/", headers=[(b"last-event-id", f"{name}:5".encode())])
    await at_head.close()
    assert delta.of("events_replays_total") == 1  # nor does a resume at the head


def test_a_delivery_leaves_the_tally_to_the_heartbeat_tick() -> None:
    """Adding the tally to the counters costs a lock per counter: not once per event."""
    metrics.flush()
    metrics.tally.bytes += 100
    try:
        metrics.delivered(3, None)
        assert metrics.tally.bytes == 100
    finally:
        metrics.flush()


async def test_the_tally_is_flushed_by_the_heartbeat_tick(settings) -> None:
    settings.EVENTS_HEARTBEAT_SECONDS = 0.4
    stream = await open_live(f"/events/{channel()}/")  # starts the hub and its heartbeat task
    delta = watch("events_written_bytes_total")
    metrics.tally.bytes += 1000
    await until(lambda: delta.of("events_written_bytes_total") >= 1000)
    assert metrics.tally.bytes < 1000
    await stream.close()


async def test_gap_fills_are_counted(monkeypatch) -> None:
    monkeypatch.setattr(liveness, "PING_INTERVAL_SECONDS", 0.2)
    name = channel()
    stream = await open_live(f"/events/{name}/")
    delta = watch("events_gap_fills_total", "events_gap_filled_events_total")
    for n in range(2):
        await sync_to_async(store.append)(name, "message", json.dumps(n))  # never broadcast
    await asend_event(name, "reveals the gap")
    await stream.events(3, timeout=10)
    await stream.close()
    assert delta.of("events_gap_fills_total") >= 1
    assert delta.of("events_gap_filled_events_total") == 2


async def test_token_expiry_is_a_close_reason() -> None:
    name = channel()
    delta = watch(("events_streams_closed_total", {"reason": "token_expired"}), "events_streams_open")
    token = make_token([name], ttl=2)
    stream = await open_live("/events/", f"channel={name}&token={token}".encode())
    assert delta.of("events_streams_open") == 1
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 6
    while not stream.ended:
        await stream.read_chunk(timeout=max(0.01, deadline - loop.time()))
    await stream.close()
    assert delta.of("events_streams_closed_total", reason="token_expired") == 1
    assert delta.of("events_streams_open") == 0


@pytest.fixture
async def own_redis(settings) -> AsyncIterator[RedisServer]:
    """A Redis of this test's own for the channel layer, which it may stop."""
    server = RedisServer()
    await sync_to_async(server.start)()
    old = settings.CHANNEL_LAYERS["default"]
    settings.CHANNEL_LAYERS = {"default": {**old, "CONFIG": {**old["CONFIG"], "hosts": [server.url]}}}
    channel_layers.backends.clear()
    yield server
    await close_hub()  # while its Redis still answers
    await sync_to_async(server.stop)()
    channel_layers.backends.clear()


async def test_a_lost_layer_is_counted_and_shown_as_the_hubs_state(monkeypatch, own_redis) -> None:
    monkeypatch.setattr(liveness, "PING_INTERVAL_SECONDS", 0.2)
    monkeypatch.setattr(liveness, "PING_TIMEOUT_SECONDS", 0.5)
    name = channel()
    stream = await open_live(f"/events/{name}/")
    assert value("events_hubs", layer="up") >= 1
    delta = watch(
        "events_layer_lost_total",
        ("events_streams_closed_total", {"reason": "layer_lost"}),
        ("events_hubs", {"layer": "lost"}),
    )
    await sync_to_async(own_redis.stop)()
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 10
    while not stream.ended:
        await stream.read_chunk(timeout=max(0.01, deadline - loop.time()))
    await stream.close()
    assert delta.of("events_layer_lost_total") == 1
    assert delta.of("events_streams_closed_total", reason="layer_lost") == 1
    assert delta.of("events_hubs", layer="lost") == 1
    # Redis answers again: the next ping finds the layer back.
    await sync_to_async(own_redis.start)()
    await until(
        lambda: value("events_hubs", layer="lost") == delta.before[("events_hubs", (("layer", "lost"),))]
    )
    assert delta.of("events_layer_lost_total") == 1  # one outage, counted once


def test_the_grafana_dashboard_queries_only_metrics_that_exist() -> None:
    """docs/grafana-dashboard.json imports as it is (a Prometheus data source input) and
    names no metric /metrics lacks."""
    dashboard = json.loads((ROOT / "docs" / "grafana-dashboard.json").read_text())
    assert [item["pluginId"] for item in dashboard["__inputs"]] == ["prometheus"]
    suffixes = {"counter": ["_total"], "gauge": [""], "histogram": ["_bucket", "_count", "_sum"]}
    exposed = {name + suffix for name, kind in FAMILIES.items() for suffix in suffixes[kind]}
    queried = set()
    for panel in dashboard["panels"]:
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            queried |= set(re.findall(r"\bevents_[a-z_]+", target["expr"]))
    assert queried, "no metric queried"
    missing = {name for name in queried if name not in exposed}
    assert not missing, missing
    # Every family is on the dashboard (gap fills as the events they filled).
    shown = {re.sub(r"_(total|bucket)$", "", name) for name in queried}
    assert set(FAMILIES) - shown == {"events_gap_fills"}
