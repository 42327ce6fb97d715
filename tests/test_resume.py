"""Resume (README "Resume"): replay after Last-Event-ID, then live, with no gap and no duplicate."""

from __future__ import annotations

import asyncio
import json

import pytest

from events import asend_event
from site_config.asgi import application
from tests.streams import Stream, channel, open_stream

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("hub_cleanup")]


def payloads(events: list[dict[str, str]]) -> list[object]:
    return [json.loads(e["data"]) for e in events]


async def publish(name: str, values) -> None:
    for value in values:
        await asend_event(name, value)


@pytest.mark.parametrize("how", ["header", "query"])
async def test_replays_after_the_id_then_goes_live(how: str) -> None:
    name = channel()
    await publish(name, range(1, 6))
    if how == "header":
        stream = await open_stream(f"/events/{name}/", last_id=f"{name}:2")
    else:
        stream = await open_stream(f"/events/{name}/", f"last_event_id={name}:2".encode())
    replayed = await stream.events(3)
    assert payloads(replayed) == [3, 4, 5]
    assert [e["id"] for e in replayed] == [f"{name}:{n}" for n in (3, 4, 5)]
    await publish(name, [6])
    assert payloads(await stream.events(4)) == [3, 4, 5, 6]
    await stream.close()


async def test_header_wins_over_query() -> None:
    name = channel()
    await publish(name, range(1, 4))
    stream = await Stream(
        application,
        f"/events/{name}/",
        f"last_event_id={name}:0".encode(),
        [(b"last-event-id", f"{name}:2".encode())],
    ).open()
    assert payloads(await stream.events(1)) == [3]
    await stream.close()


async def test_resume_at_the_head_replays_nothing() -> None:
    name = channel()
    await publish(name, [1, 2])
    stream = await open_stream(f"/events/{name}/", last_id=f"{name}:2")
    frames = await stream.frames_until(
        lambda fs: any(f.get("id") == f"{name}:2" and "data" not in f for f in fs)
    )
    assert not [f for f in frames if "data" in f]
    await stream.close()


async def test_no_gap_no_duplicate_while_publishing_during_reconnect() -> None:
    """Events published concurrently with the catch-up arrive exactly once, in order."""
    name = channel()
    await publish(name, range(1, 51))
    publisher = asyncio.create_task(publish(name, range(51, 151)))
    stream = await open_stream(f"/events/{name}/", last_id=f"{name}:10")
    await publisher
    events = await stream.events(140, timeout=20)
    assert payloads(events) == list(range(11, 151))
    await asyncio.sleep(0.2)
    assert len([f for f in (await stream.frames_until(lambda fs: True)) if "data" in f]) == 140
    await stream.close()


async def test_multi_channel_resume_covers_every_channel() -> None:
    a, b = channel(), channel()
    await publish(a, [1, 2, 3])
    await publish(b, [10, 20])
    stream = await open_stream("/events/", f"channel={a}&channel={b}".encode(), last_id=f"{a}:1,{b}:0")
    events = await stream.events(4)
    assert sorted(payloads(events)) == [2, 3, 10, 20]
    assert events[-1]["id"] in {f"{a}:3,{b}:2"}
    await stream.close()


@pytest.mark.parametrize(
    ("last_id", "reason"),
    [
        ("garbage", "malformed id"),
        ("{name}:999", "unknown id"),
        ("other-channel:1", "id does not cover this channel"),
        ("{name}:x", "malformed id"),
    ],
    ids=["malformed", "future", "other-channel", "non-numeric"],
)
async def test_unusable_ids_give_stream_reset_then_live(last_id: str, reason: str) -> None:
    name = channel()
    await publish(name, [1, 2])
    stream = await open_stream(f"/events/{name}/", last_id=last_id.format(name=name))
    [reset] = await stream.events(1)
    assert reset["event"] == "stream-reset"
    assert json.loads(reset["data"]) == {"channels": [name], "reasons": {name: reason}}
    assert reset["id"] == f"{name}:2"
    await publish(name, [3])
    events = await stream.events(2)
    assert payloads(events[1:]) == [3]
    await stream.close()


async def test_id_older_than_the_retained_history_gives_stream_reset(settings) -> None:
    settings.EVENTS_HISTORY_PER_CHANNEL = 10
    name = channel()
    await publish(name, range(1, 31))  # trimmed in batches: seqs <= 20 are gone
    stream = await open_stream(f"/events/{name}/", last_id=f"{name}:3")
    [reset] = await stream.events(1)
    assert reset["event"] == "stream-reset"
    assert json.loads(reset["data"])["reasons"] == {name: "id is older than the retained history"}
    await stream.close()
    # Within the history: a normal replay.
    stream = await open_stream(f"/events/{name}/", last_id=f"{name}:25")
    assert payloads(await stream.events(5)) == [26, 27, 28, 29, 30]
    await stream.close()


async def test_reset_of_one_channel_still_replays_the_other() -> None:
    a, b = channel(), channel()
    await publish(a, [1, 2])
    await publish(b, [1, 2])
    stream = await open_stream("/events/", f"channel={a}&channel={b}".encode(), last_id=f"{a}:1")
    events = await stream.events(2)
    assert events[0]["event"] == "stream-reset"
    assert json.loads(events[0]["data"])["channels"] == [b]
    assert payloads(events[1:]) == [2]
    assert events[1]["id"] == f"{a}:2,{b}:2"
    await stream.close()


async def test_id_ahead_of_this_process_but_committed_resumes_without_reset() -> None:
    """A client coming from another process may hold an id this process has not
    delivered yet (its message still on the way): that id is honoured, not reset."""
    from channels.db import database_sync_to_async

    from events import store

    name = channel()
    await publish(name, [1, 2])
    first = await open_stream(f"/events/{name}/")
    # Once its id is out, this process's hub follows the channel from seq 2.
    await first.frames_until(lambda fs: any(f.get("id") == f"{name}:2" for f in fs))
    # Committed, but the broadcast has not reached this process yet.
    for n in (3, 4):
        await database_sync_to_async(store.append)(name, "message", json.dumps(n))
    second = await open_stream(f"/events/{name}/", last_id=f"{name}:4")
    await publish(name, [5])  # reveals the gap: the hub fills 3 and 4 from the store
    events = await second.events(1)
    assert [e.get("event", "message") for e in events] == ["message"]
    assert payloads(events) == [5]
    assert events[0]["id"] == f"{name}:5"
    assert payloads(await first.events(3)) == [3, 4, 5]
    await first.close()
    await second.close()


async def test_id_beyond_anything_committed_is_still_unknown() -> None:
    name = channel()
    await publish(name, [1])
    first = await open_stream(f"/events/{name}/")
    await first.frames_until(lambda fs: any(f.get("id") == f"{name}:1" for f in fs))
    second = await open_stream(f"/events/{name}/", last_id=f"{name}:7")
    [reset] = await second.events(1)
    assert reset["event"] == "stream-reset"
    assert json.loads(reset["data"])["reasons"] == {name: "unknown id"}
    await first.close()
    await second.close()


async def test_long_replay_is_read_page_by_page(monkeypatch) -> None:
    from events import replay

    monkeypatch.setattr(replay, "PAGE_ROWS", 7)
    name = channel()
    await publish(name, range(1, 51))
    stream = await open_stream(f"/events/{name}/", last_id=f"{name}:3")
    replayed = await stream.events(47)
    assert payloads(replayed) == list(range(4, 51))
    assert [e["id"] for e in replayed] == [f"{name}:{n}" for n in range(4, 51)]
    await publish(name, [51])
    assert payloads(await stream.events(48))[-1] == 51
    await stream.close()


async def test_trim_during_a_replay_ends_the_stream_and_the_resume_is_reset(monkeypatch) -> None:
    from events import replay, store

    monkeypatch.setattr(replay, "PAGE_ROWS", 5)
    name = channel()
    await publish(name, range(1, 21))
    real_page = store.page_within
    calls = []

    def page_trimmed_after_the_first(channel_name, after, upto, max_bytes, rows):
        calls.append(after)
        if len(calls) == 2:
            store.trim(channel_name, 3)  # a publisher's trim lands between two pages
        return real_page(channel_name, after, upto, max_bytes, rows)

    monkeypatch.setattr(store, "page_within", page_trimmed_after_the_first)
    stream = await open_stream(f"/events/{name}/", last_id=f"{name}:0")
    body = await stream.body()  # the server ends the response
    frames = [f for f in consumers_frames(body) if "data" in f]
    assert payloads(frames) == [1, 2, 3, 4, 5]
    again = await open_stream(f"/events/{name}/", last_id=frames[-1]["id"])
    [reset] = await again.events(1)
    assert reset["event"] == "stream-reset"
    assert json.loads(reset["data"])["reasons"] == {name: "id is older than the retained history"}
    await again.close()


async def test_replay_pages_are_bounded_in_bytes(monkeypatch, settings) -> None:
    from events import store

    settings.EVENTS_MAX_QUEUED_BYTES = 10_000  # pages of at most 5,000 bytes
    name = channel()
    await publish(name, ["x" * 1998] * 9)  # 2,000 bytes each as stored JSON
    real_page_within = store.page_within
    pages: list[tuple[list[int], int]] = []

    def recorded(*args):
        events, size = real_page_within(*args)
        pages.append(([e.seq for e in events], size))
        return events, size

    monkeypatch.setattr(store, "page_within", recorded)
    stream = await open_stream(f"/events/{name}/", last_id=f"{name}:0")
    assert len(await stream.events(9)) == 9
    assert pages == [([1, 2], 4000), ([3, 4], 4000), ([5, 6], 4000), ([7, 8], 4000), ([9], 2000)]
    await stream.close()


def consumers_frames(body: bytes) -> list[dict[str, str]]:
    from tests.streams import parse_frames

    return parse_frames(body)


async def test_replays_go_on_with_a_budget_smaller_than_a_page(settings) -> None:
    # Each replay holds at most its page while it writes it: with a budget of one byte
    # they take turns, and none waits for ever on what it (or another) holds.
    settings.EVENTS_REPLAY_BUDGET_BYTES = 1
    settings.EVENTS_MAX_QUEUED_BYTES = 200  # pages of 100 bytes: a few events each
    names = [channel(), channel()]
    for name in names:
        await publish(name, [f"{n:030d}" for n in range(20)])
    streams = [await open_stream(f"/events/{name}/", last_id=f"{name}:0") for name in names]
    for stream in streams:
        assert len(await stream.events(20)) == 20
    for stream in streams:
        await stream.close()
