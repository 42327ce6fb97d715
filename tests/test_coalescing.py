"""Coalesced delivery: what is waiting for a stream goes out in one write (issue 17).

The hub takes every message already queued for it on the layer in one pass and hands
each stream its share as one chunk; a replay hands over the frames it held as one."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest
from asgiref.sync import sync_to_async
from channels.layers import InMemoryChannelLayer, get_channel_layer

from events import store
from events.consumers import LIVE, EventStreamConsumer
from events.hub import running_hub
from events.layer_backlog import take_queued
from events.messages import EVENT_MESSAGE
from tests.streams import channel, open_live, parse_frames

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("hub_cleanup")]


def event(name: str, seq: int) -> dict:
    return {"type": EVENT_MESSAGE, "channel": name, "seq": seq, "event": "message", "data": str(seq)}


def queue_for_hub(messages: list) -> None:
    """Put messages in the hub's layer queue all at once, as a burst read from Redis
    lands there (no await in between: the hub finds them all queued)."""
    hub = running_hub()
    assert hub is not None
    layer: Any = hub.layer
    queue = layer._get_layer().channels[hub.membership.channel_name]
    for message in messages:
        queue.put_nowait(layer.serialize(message))


async def test_a_burst_queued_in_the_layer_reaches_a_stream_as_one_chunk() -> None:
    name = channel()
    stream = await open_live(f"/events/{name}/")
    queue_for_hub([event(name, seq) for seq in range(1, 6)])
    chunk = await stream.read_chunk()
    expected = [(f"{name}:{n}", str(n)) for n in range(1, 6)]
    assert [(f["id"], f["data"]) for f in parse_frames(chunk)] == expected
    await stream.close()


async def test_a_pass_with_a_gap_and_a_duplicate_delivers_each_event_once_in_order() -> None:
    name = channel()
    stream = await open_live(f"/events/{name}/")
    for n in range(1, 6):
        await sync_to_async(store.append)(name, "message", str(n))  # never broadcast
    # 3 lost on the layer (read from the store), 2 and 1 arriving twice.
    queue_for_hub([event(name, seq) for seq in (1, 2, 2, 4, 1, 5)])
    queue_for_hub([event(name, 5), event(name, 6)])
    events = await stream.events(6)
    assert [(e["id"], e["data"]) for e in events] == [(f"{name}:{n}", str(n)) for n in range(1, 7)]
    await stream.close()


async def test_streams_on_several_channels_keep_the_order_between_channels_in_a_pass() -> None:
    a, b = channel(), channel()
    stream = await open_live("/events/", f"channel={a}&channel={b}".encode())
    queue_for_hub([event(a, 1), event(b, 1), event(a, 2), event(b, 2)])
    events = await stream.events(4)
    assert [e["id"] for e in events] == [f"{a}:1,{b}:0", f"{a}:1,{b}:1", f"{a}:2,{b}:1", f"{a}:2,{b}:2"]
    await stream.close()


async def test_the_frames_held_during_a_replay_are_written_as_one_chunk(monkeypatch) -> None:
    consumer = EventStreamConsumer()
    consumer.channels = ("c",)
    consumer._hold_live_frames()
    consumer.positions = {"c": 1}  # the replay wrote up to 1
    written: list[bytes] = []

    async def write(data: bytes) -> None:
        written.append(data)

    monkeypatch.setattr(consumer, "write", write)
    frames = {seq: f"id: c:{seq}\ndata: {seq}\n\n".encode() for seq in range(1, 5)}
    for seq in (1, 2):  # 1 was also replayed: held, then skipped
        await consumer.deliver_batch("c", [("c", seq, frames[seq], b"")], frames[seq])
    await consumer.deliver_batch("c", [("c", 3, frames[3], b""), ("c", 4, frames[4], b"")], b"")
    assert written == []
    await consumer.go_live()
    assert written == [frames[2] + frames[3] + frames[4]]
    assert consumer.phase is LIVE and consumer.positions == {"c": 4}


# -- the layer's internals the hub relies on (events/layer_backlog.py) ------------------


async def test_the_pubsub_layer_keeps_a_queue_of_raw_messages_per_channel() -> None:
    """Re-check on every channels-redis upgrade: a message sent is in the per-loop
    layer's `channels[name]` queue, serialized, until received."""
    layer = get_channel_layer()
    name = await layer.new_channel("test.")
    for n in range(4):
        await layer.send(name, {"type": "test", "n": n})
    assert (await layer.receive(name))["n"] == 0
    queue = layer._get_layer().channels[name]
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 5
    while queue.qsize() < 3 and loop.time() < deadline:
        await asyncio.sleep(0.01)
    assert [m["n"] for m in take_queued(layer, name, max_messages=2, max_bytes=10_000)] == [1, 2]
    assert [m["n"] for m in take_queued(layer, name, max_messages=10, max_bytes=1)] == [3]  # at least one
    assert take_queued(layer, name, max_messages=10, max_bytes=10_000) == []


async def test_an_unreadable_message_is_skipped_and_the_rest_taken(caplog) -> None:
    layer = get_channel_layer()
    name = await layer.new_channel("test.")
    queue = layer._get_layer().channels[name]
    for raw in (layer.serialize({"n": 1}), b"\xc1 not msgpack", layer.serialize({"n": 2})):
        queue.put_nowait(raw)
    assert [m["n"] for m in take_queued(layer, name, max_messages=10, max_bytes=10_000)] == [1, 2]
    assert "could not be read" in caplog.text


async def test_other_layers_take_nothing_more_a_pass() -> None:
    layer = InMemoryChannelLayer()
    name = await layer.new_channel()
    await layer.send(name, {"type": "test"})
    assert take_queued(layer, name, max_messages=10, max_bytes=10_000) == []
    assert take_queued(object(), name, max_messages=10, max_bytes=10_000) == []


async def test_a_malformed_event_message_is_dropped_and_the_hub_goes_on(monkeypatch) -> None:
    """Any process may send on the layer: an event message without its seq (or with a
    field of the wrong type) is logged and dropped; the events around it arrive."""
    name = channel()
    stream = await open_live(f"/events/{name}/")
    # Once the site is loaded (its LOGGING setting resets the loggers' handlers).
    records: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = records.append  # type: ignore[method-assign]
    monkeypatch.setattr(logging.getLogger("events.receiver"), "handlers", [handler])
    no_seq = {key: value for key, value in event(name, 2).items() if key != "seq"}
    not_a_dict = ["events.event", name, 2]
    queue_for_hub([event(name, 1), no_seq, not_a_dict, {**event(name, 2), "seq": "2"}, event(name, 2)])
    events = await stream.events(2)
    assert [(e["id"], e["data"]) for e in events] == [(f"{name}:1", "1"), (f"{name}:2", "2")]
    assert sum("malformed event message" in r.getMessage() for r in records) == 2
    assert sum("not a dict" in r.getMessage() for r in records) == 1
    # The receive loop is still running: a later event arrives too.
    queue_for_hub([event(name, 3)])
    events = await stream.events(3)  # every event the stream has had so far
    assert [e["id"] for e in events] == [f"{name}:{n}" for n in (1, 2, 3)]
    await stream.close()


class UnreadTransport:
    """A connection whose client has taken nothing yet: every byte written stays queued."""

    bounded = True

    def __init__(self) -> None:
        self.held = 0
        self.aborted = False

    def start_direct(self) -> None:
        pass

    def write(self, data: bytes) -> bool:
        self.held += len(data)
        return True

    def queued(self) -> int:
        return self.held

    def abort(self) -> bool:
        self.aborted = True
        return True

    async def drain(self, timeout: float) -> None:
        pass


async def test_one_chunk_larger_than_the_bound_does_not_end_a_reader_only_bytes_left_waiting(
    settings,
) -> None:
    """A pass's chunk can exceed EVENTS_MAX_QUEUED_BYTES once framed for a stream (many
    events, a long id covering many channels): the bound applies to what was queued
    before a write and is still not taken, so a client that reads is never ended for
    one chunk, and one that does not read is ended at its next write."""
    settings.EVENTS_MAX_QUEUED_BYTES = 1_000
    consumer = EventStreamConsumer()
    consumer.channels = ("c",)
    consumer.phase = LIVE
    transport = UnreadTransport()
    consumer.transport = transport
    await consumer.write(b"x" * 5_000)
    assert consumer.phase is LIVE and not transport.aborted
    transport.held = 0  # the client took it all
    await consumer.write(b"y" * 5_000)
    assert consumer.phase is LIVE and not transport.aborted
    # It takes nothing more: the next write finds 5,000 bytes still waiting.
    await consumer.write(b"z" * 10)
    assert transport.aborted
