"""Where a stream starts: its position is read from the store before the response head,
so an event committed after the head (while the process's hub is still joining the
channel) reaches the stream from the store, once, in order."""

from __future__ import annotations

import collections
import json

import pytest
from asgiref.sync import sync_to_async

from events import asend_event, hub, store
from site_config.asgi import application
from tests.streams import Stream, channel, live, open_live, open_stream

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("hub_cleanup")]


@pytest.fixture
def commit_while_joining(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Channels listed here get one event committed, and never broadcast, just before the
    hub reads their position when it joins them: the window between the head and the
    hub's first query. (The stream reads its start through the same reader, before the
    head: that is the first read of each of these channels, and commits nothing.)"""
    channels: list[str] = []
    reads: collections.Counter[str] = collections.Counter()
    read_position = hub._last_seqs

    async def last_seqs(names: list[str]) -> dict[str, int]:
        for name in names:
            reads[name] += 1
            if name in channels and reads[name] == 2:
                await sync_to_async(store.append)(name, "message", json.dumps("in the window"))
        return await read_position(names)

    monkeypatch.setattr(hub, "_last_seqs", last_seqs)
    return channels


async def test_event_committed_while_the_hub_joins_is_delivered(commit_while_joining) -> None:
    name = channel()
    commit_while_joining.append(name)
    stream = await Stream(application, f"/events/{name}/").open()
    assert await stream.read_chunk() == b"retry: 3000\n\n:ok\n\n"
    await stream.frames_until(lambda frames: any("id" in f and "data" not in f for f in frames))
    await asend_event(name, "after")
    events = await stream.events(2)
    assert [(e["id"], json.loads(e["data"])) for e in events] == [
        (f"{name}:1", "in the window"),
        (f"{name}:2", "after"),
    ]
    await stream.close()


async def test_several_channels_one_joined_one_new(commit_while_joining) -> None:
    joined, new = channel(), channel()
    holder = await open_live(f"/events/{joined}/")
    # The committed event is on the channel new to the hub; the other is already joined.
    commit_while_joining.append(new)
    stream = await Stream(application, "/events/", f"channel={joined}&channel={new}".encode()).open()
    await stream.frames_until(lambda frames: any("id" in f and "data" not in f for f in frames))
    await asend_event(joined, "live")
    events = await stream.events(2)
    assert [(e["id"], json.loads(e["data"])) for e in events] == [
        (f"{joined}:0,{new}:1", "in the window"),
        (f"{joined}:1,{new}:1", "live"),
    ]
    await stream.close()
    await holder.close()


async def test_event_committed_before_the_head_is_not_replayed() -> None:
    """The start is the store's position when the request is answered: what was
    committed before is history (a client asks for it with Last-Event-ID)."""
    name = channel()
    await asend_event(name, "before")
    stream = await open_stream(f"/events/{name}/")
    frames = await live(stream)
    assert [f for f in frames if "id" in f] == [{"id": f"{name}:1"}]
    await asend_event(name, "after")
    events = await stream.events(1)
    assert [(e["id"], json.loads(e["data"])) for e in events] == [(f"{name}:2", "after")]
    await stream.close()
