"""/metrics across real daphne processes sharing PROMETHEUS_MULTIPROC_DIR: whichever
process answers the scrape counts the streams and deliveries of every other."""

from __future__ import annotations

import asyncio
import socket
import struct
import uuid

import httpx
import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.parser import text_string_to_metric_families

from tests.e2e.sse_client import Subscriber, close_all
from tests.servers import Daphne, manage
from tests.streams import channel

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

TOKEN = "e2e-metrics-token-" + uuid.uuid4().hex


async def scrape(server: Daphne) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of the server's /metrics, parsed, by (name, labels)."""
    async with httpx.AsyncClient(base_url=server.url) as client:
        response = await client.get("/metrics", headers={"Authorization": f"Bearer {TOKEN}"})
    assert response.status_code == 200, response.text
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    }


def get(samples: dict, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


async def wait_for(server: Daphne, name: str, expected: float, timeout: float = 10, **labels: str) -> dict:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        samples = await scrape(server)
        if get(samples, name, **labels) == expected:
            return samples
        assert loop.time() < deadline, (
            f"{name}{labels} is {get(samples, name, **labels)}, expected {expected}"
        )
        await asyncio.sleep(0.1)


async def test_a_scrape_of_one_process_counts_every_process(server_env, tmp_path) -> None:
    env = {**server_env, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path / "metrics"), "EVENTS_METRICS_TOKEN": TOKEN}
    first, second = Daphne(env).start(), Daphne(env).start()
    name = channel("met")
    subscribers: list[Subscriber] = []
    try:
        for server in (first, first, second):
            subscribers.append(await Subscriber(f"{server.url}/events/{name}/").__aenter__())
        for server in (first, second):
            await wait_for(server, "events_streams_open", 3)

        # One event from a management command (a third process), two over HTTP.
        result = await asyncio.to_thread(manage, env, "send_event", name, '{"n": 0}')
        assert result.returncode == 0, result.stderr
        async with httpx.AsyncClient(base_url=second.url) as client:
            for n in (1, 2):
                response = await client.post(
                    f"/events/{name}/",
                    json={"data": {"n": n}},
                    headers={"Authorization": f"Bearer {env['EVENTS_PUBLISH_TOKEN']}"},
                )
                assert response.status_code == 201
        for subscriber in subscribers:
            await subscriber.wait_for(3)

        # Both processes answer the same totals: 3 events x 3 streams, 2 on one process
        # and 1 on the other; a delivery lag per event and process.
        for server in (first, second):
            samples = await wait_for(server, "events_deliveries_total", 9)
            assert get(samples, "events_streams_open") == 3
            assert get(samples, "events_streams_opened_total") == 3
            assert get(samples, "events_published_total", path="command") == 1
            assert get(samples, "events_published_total", path="http") == 2
            # Once per event and process, whether the message or the store (a hub's
            # reconciliation can beat the message on a loaded machine) brought it.
            assert get(samples, "events_delivery_lag_seconds_count") == 6
            assert get(samples, "events_publish_latency_seconds_count") == 3
            assert get(samples, "events_hubs", layer="up") == 2
            assert get(samples, "events_written_bytes_total") > 0

        # A stream that ends is no longer open, and says why.
        await subscribers.pop().aclose()
        samples = await wait_for(first, "events_streams_open", 2)
        assert get(samples, "events_streams_closed_total", reason="client_gone") == 1

        # SIGKILL: the killed process's open streams stop counting at the next scrape;
        # what it delivered stays in the totals.
        await subscribers.pop().aclose()  # first's second stream: 1 left there
        await wait_for(first, "events_streams_open", 1)
        subscribers.append(await Subscriber(f"{second.url}/events/{name}/").__aenter__())
        await wait_for(first, "events_streams_open", 2)
        second.kill()
        samples = await wait_for(first, "events_streams_open", 1)
        assert get(samples, "events_deliveries_total") == 9
        assert get(samples, "events_hubs", layer="up") == 1

        # SIGTERM: daphne ends the open stream, which counts as a shutdown; the files
        # outlive every process (read here without any server).
        first.stop()
        collected = CollectorRegistry()
        MultiProcessCollector(collected, env["PROMETHEUS_MULTIPROC_DIR"])
        closed = {
            sample.labels["reason"]: sample.value
            for family in collected.collect()
            for sample in family.samples
            if sample.name == "events_streams_closed_total" and sample.value
        }
        assert closed == {"client_gone": 2, "shutdown": 1}, closed
    finally:
        await close_all(subscribers, first, second)


async def test_clients_that_go_away_are_noticed_and_their_streams_leave(server_env, tmp_path) -> None:
    """Under daphne an open stream learns of its connection's end through what replaced
    daphne's per-request queue (events/transport.py request_read()): a client that
    closes, and one whose connection is reset, each end their stream at once, and
    the hub goes on delivering to the stream left."""
    env = {**server_env, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path / "metrics"), "EVENTS_METRICS_TOKEN": TOKEN}
    server = Daphne(env).start()
    name = channel("gone")
    subscribers: list[Subscriber] = []
    try:
        for _ in range(3):
            subscribers.append(await Subscriber(f"{server.url}/events/{name}/").__aenter__())
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(f"GET /events/{name}/ HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode())
        await asyncio.wait_for(reader.readuntil(b":ok\n\n"), 10)
        await wait_for(server, "events_streams_open", 4)

        # A reset: SO_LINGER 0, so the close sends RST instead of FIN.
        sock = writer.get_extra_info("socket")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        writer.transport.abort()
        await subscribers.pop().aclose()
        await subscribers.pop().aclose()
        samples = await wait_for(server, "events_streams_open", 1)
        assert get(samples, "events_streams_closed_total", reason="client_gone") == 3

        async with httpx.AsyncClient(base_url=server.url) as client:
            response = await client.post(
                f"/events/{name}/",
                json={"data": {"n": 1}},
                headers={"Authorization": f"Bearer {env['EVENTS_PUBLISH_TOKEN']}"},
            )
            assert response.status_code == 201
        [event] = await subscribers[0].wait_for(1)
        assert event.json() == {"n": 1}
        samples = await wait_for(server, "events_deliveries_total", 1)  # to the one stream left

        await subscribers.pop().aclose()
        samples = await wait_for(server, "events_streams_open", 0)
        assert get(samples, "events_streams_closed_total", reason="client_gone") == 4
    finally:
        await close_all(subscribers, server)
