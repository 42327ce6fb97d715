"""The per-process hub's safety nets, through real streams and real Redis."""

from __future__ import annotations

import asyncio
import json

import pytest
from asgiref.sync import sync_to_async

from events import asend_event, liveness, store
from events.consumers import EventStreamConsumer
from events.hub import get_hub
from site_config.asgi import application
from tests.streams import Stream, channel, open_live

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("hub_cleanup")]


async def read_until_ended(stream: Stream, timeout: float = 5) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not stream.ended:
        await stream.read_chunk(timeout=max(0.01, deadline - loop.time()))


async def test_a_last_event_never_broadcast_arrives_by_reconciliation(monkeypatch) -> None:
    """A message the layer lost with no later event to reveal the gap (a publisher that
    died between commit and broadcast): the hub's check against the store after each
    reconciliation after each liveness ping delivers it."""
    monkeypatch.setattr(liveness, "PING_INTERVAL_SECONDS", 0.2)
    name = channel()
    stream = await open_live(f"/events/{name}/")
    await sync_to_async(store.append)(name, "message", '"never broadcast"')  # no broadcast, no follow-up
    [event] = await stream.events(1, timeout=10)
    assert (event["id"], event["data"]) == (f"{name}:1", '"never broadcast"')
    await stream.close()


async def test_a_gap_that_was_trimmed_ends_the_stream_and_resume_is_reset() -> None:
    """A hub that fell behind by more than the retained history cannot fill the gap: its
    streams end, and the client's resume answers stream-reset rather than skipping."""
    name = channel()
    stream = await open_live(f"/events/{name}/")
    for n in range(30):
        await sync_to_async(store.append)(name, "message", json.dumps(n))  # never broadcast
    await sync_to_async(store.trim)(name, 5)  # seqs 1..25 are gone
    await asend_event(name, "after the gap")  # seq 31 reveals the gap
    await read_until_ended(stream)
    # Ended without delivering what is left after the hole (26..31): the client must
    # learn of the hole through a stream-reset, not skip it.
    assert b"data:" not in stream.buffer
    await stream.close()

    again = await Stream(
        application, f"/events/{name}/", headers=[(b"last-event-id", f"{name}:0".encode())]
    ).open()
    first = await again.events(1)
    assert first[0]["event"] == "stream-reset"
    await again.close()


async def test_a_gap_trimmed_entirely_ends_the_stream_too() -> None:
    """The whole gap is gone (the store's page is empty, not merely late)."""
    name = channel()
    stream = await open_live(f"/events/{name}/")
    for n in range(10):
        await sync_to_async(store.append)(name, "message", json.dumps(n))  # never broadcast
    await sync_to_async(store.trim)(name, 0)  # all of 1..10 gone
    await asend_event(name, "after the gap")  # seq 11
    await read_until_ended(stream)
    assert b"data:" not in stream.buffer
    await stream.close()


async def test_live_frames_held_during_a_replay_are_bounded_in_bytes(settings) -> None:
    """While a stream replays, live frames wait in memory; past PENDING_BYTES_FACTOR x
    EVENTS_MAX_QUEUED_BYTES the stream is ended (it resumes) instead of growing."""
    settings.EVENTS_MAX_QUEUED_BYTES = 1000
    consumer = EventStreamConsumer()
    consumer.channels = ("c",)
    consumer._hold_live_frames()
    ended = []

    async def close_stream(abort: bool = False, final: bytes = b"", reason: str = "") -> None:
        ended.append(abort)
        assert reason == "fell_behind"

    consumer.close_stream = close_stream  # type: ignore[method-assign]
    frame = b"x" * 400
    for seq in range(1, 11):  # 4,000 bytes: the bound
        await consumer.deliver_batch("c", [("c", seq, frame, frame)], frame)
    assert ended == []
    await consumer.deliver_batch("c", [("c", 11, frame, frame)], frame)
    assert ended == [True]


class QuietStream:
    """A stream as the hub sees it, recording nothing: only its channels matter here."""

    last_write = 0.0

    def __init__(self, *channels: str) -> None:
        self.channels = channels

    async def deliver(self, channel, seq, frame, body) -> None:
        pass

    async def deliver_batch(self, channel, batch, chunk) -> None:
        pass

    async def heartbeat(self) -> None:
        pass

    async def close_stream(self, *, reason) -> None:
        pass


async def test_a_stream_cancelled_while_joining_does_not_strand_the_channels_other_streams(
    monkeypatch,
) -> None:
    """The stream that started a channel's join is cancelled (daphne ends an application
    whose client left, or shuts down) while another stream of the channel waits for the
    same join: the join still completes, and the other stream gets its position."""
    hub = get_hub()
    await hub.subscribe(QuietStream(channel()))  # the hub started, its layer channel made
    release = asyncio.Event()
    real_join = hub.membership.join

    async def slow_join(name, still_wanted):
        await release.wait()
        return await real_join(name, still_wanted)

    monkeypatch.setattr(hub.membership, "join", slow_join)
    name = channel()
    first, second = QuietStream(name), QuietStream(name)
    starting = asyncio.create_task(hub.subscribe(first))
    await asyncio.sleep(0.05)
    waiting = asyncio.create_task(hub.subscribe(second))
    await asyncio.sleep(0.05)
    starting.cancel()
    await asyncio.gather(starting, return_exceptions=True)
    release.set()
    positions = await asyncio.wait_for(waiting, timeout=5)
    assert positions == {name: 0}
    await hub.unsubscribe(first)
    await hub.unsubscribe(second)
