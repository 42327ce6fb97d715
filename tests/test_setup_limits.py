"""Stream set-up: a client's set-ups in flight are capped; set-up work does not run
on the process's single sync thread."""

from __future__ import annotations

import asyncio
import json
import threading

import pytest

from site_config.asgi import application
from tests.streams import Stream, channel, live

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("hub_cleanup")]

_gate = threading.Event()
_threads: list[str] = []


def gated_policy(user, channel):
    """A policy that holds every set-up until the test opens the gate."""
    _threads.append(threading.current_thread().name)
    _gate.wait(10)
    return True


@pytest.fixture
def gated(settings):
    _gate.clear()
    _threads.clear()
    settings.EVENTS_CHANNEL_POLICY = "tests.test_setup_limits.gated_policy"
    yield
    _gate.set()


async def test_set_ups_in_flight_per_client_are_capped_with_a_429(settings, gated) -> None:
    settings.EVENTS_MAX_PENDING_SETUPS_PER_CLIENT = 2
    held = [Stream(application, f"/events/{channel()}/") for _ in range(2)]
    opening = [asyncio.create_task(stream.open()) for stream in held]
    await asyncio.sleep(0.3)
    assert not any(task.done() for task in opening)  # both held by the policy
    third = await Stream(application, f"/events/{channel()}/").open()
    assert third.status == 429
    assert third.headers[b"retry-after"] == b"1"
    assert "being set up at once" in json.loads(await third.body())["error"]
    # Another client is not affected.
    other_scope_stream = Stream(application, f"/events/{channel()}/")
    other_scope_stream.communicator.scope["client"] = ("127.0.0.9", 1234)
    other = asyncio.create_task(other_scope_stream.open())
    _gate.set()
    for task in [*opening, other]:
        assert (await asyncio.wait_for(task, 5)).status == 200
    for stream in held:
        await live(stream)
    # Set up and live: they no longer count.
    fourth = await Stream(application, f"/events/{channel()}/").open()
    assert fourth.status == 200
    for stream in [*held, other_scope_stream, fourth]:
        await stream.close()


async def test_set_up_reads_do_not_use_the_single_sync_thread(gated) -> None:
    _gate.set()
    stream = await Stream(application, f"/events/{channel()}/").open()
    assert stream.status == 200
    await stream.close()
    assert _threads and all(name.startswith("events-db") for name in _threads)
