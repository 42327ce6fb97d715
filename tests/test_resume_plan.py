"""events/resume.py without Redis or a database: the resume plan, the start positions
and the paged replay, against a fake store reader and a fake stream."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

import pytest

from events import replay, resume
from events.positions import format_position
from events.resume import ResumePlan, plan_resume, replay_plan, start_positions
from events.transport import ASGI_ONLY


@dataclass
class StoredEvent:
    seq: int
    data: str
    type: str = "t"


class FakeStore:
    """Channels with their stored seqs (a dense range: seqs have no holes)."""

    def __init__(self, stored: dict[str, range]) -> None:
        self.stored = stored
        self.bounds_asked: list[tuple[list[str], list[str]]] = []
        self.pages: list[tuple[str, int, int]] = []
        self.trim_after_page: tuple[str, int] | None = None

    async def bounds(self, ahead: list[str], wanted: list[str]) -> resume.Bounds:
        self.bounds_asked.append((ahead, wanted))
        last = {name: (self.stored[name][-1] if self.stored.get(name) else 0) for name in ahead}
        first = {name: (self.stored[name][0] if self.stored.get(name) else None) for name in wanted}
        return last, first

    async def page(
        self, channel: str, after: int, upto: int, max_bytes: int, rows: int
    ) -> tuple[list[Any], int]:
        self.pages.append((channel, after, upto))
        seqs = [seq for seq in self.stored[channel] if after < seq <= upto][:rows]
        if self.trim_after_page is not None and len(self.pages) == 2:
            name, keep_from = self.trim_after_page
            self.stored[name] = range(keep_from, self.stored[name][-1] + 1)
            seqs = [seq for seq in seqs if seq >= keep_from]
        events = [StoredEvent(seq, f'"{channel}{seq}"') for seq in seqs]
        return events, sum(len(e.data) for e in events)


async def test_malformed_id_resets_every_channel_without_a_query() -> None:
    store = FakeStore({})
    plan = await plan_resume(("a", "b"), {"a": 5, "b": 5}, "a:x", store)
    assert plan == ResumePlan(reset={"a": "malformed id", "b": "malformed id"})
    assert store.bounds_asked == []


async def test_resume_at_the_hub_position_needs_no_query() -> None:
    store = FakeStore({})
    plan = await plan_resume(("a",), {"a": 5}, "a:5", store)
    assert plan == ResumePlan(replays=[("a", 5)])
    assert store.bounds_asked == []


async def test_each_channel_is_replayed_or_reset_with_its_reason() -> None:
    store = FakeStore(
        {"old": range(1, 11), "trimmed": range(6, 11), "ahead": range(1, 9), "bogus": range(1, 9)}
    )
    live_from = {"old": 10, "trimmed": 10, "ahead": 5, "bogus": 5, "uncovered": 0}
    channels = tuple(live_from)
    plan = await plan_resume(channels, live_from, "old:2,trimmed:2,ahead:8,bogus:9", store)
    assert plan.reset == {
        "uncovered": "id does not cover this channel",
        "bogus": "unknown id",
        "trimmed": "id is older than the retained history",
    }
    # The id reached by the oldest stored event (seq 3 follows 2) and a process behind.
    assert plan.replays == [("old", 2), ("ahead", 8)]
    assert store.bounds_asked == [(["ahead", "bogus"], ["old", "trimmed"])]


async def test_history_reaching_exactly_the_next_event_is_replayed() -> None:
    store = FakeStore({"a": range(3, 11)})
    assert (await plan_resume(("a",), {"a": 10}, "a:2", store)).replays == [("a", 2)]
    assert (await plan_resume(("a",), {"a": 10}, "a:1", store)).reset == {
        "a": "id is older than the retained history"
    }
    assert (await plan_resume(("a",), {"a": 10}, "a:0", FakeStore({"a": range(0)}))).reset == {
        "a": "id is older than the retained history"
    }


class Positions:
    def __init__(self) -> None:
        self.asked: list[str] = []

    async def read(self, channel: str) -> int:
        self.asked.append(channel)
        await asyncio.sleep(0)
        return len(channel)


async def test_start_positions_per_channel() -> None:
    positions = Positions()
    assert await start_positions(positions, ("a",)) == {"a": 1}
    assert await start_positions(positions, ("bb", "ccc")) == {"bb": 2, "ccc": 3}
    assert positions.asked == ["a", "bb", "ccc"]


class FakeStream:
    def __init__(self, channels: tuple[str, ...], positions: dict[str, int]) -> None:
        self.channels = channels
        self.positions = positions
        self.transport = ASGI_ONLY
        self.written: list[bytes] = []
        self.ended: str | None = None

    @property
    def closed(self) -> bool:
        return self.ended is not None

    async def write(self, data: bytes) -> None:
        self.written.append(data)

    def framed(self, body: bytes) -> bytes:
        return f"id: {format_position(self.positions, self.channels)}\n".encode() + body

    async def close_stream(self, *, abort: bool = False, reason: str = "error") -> None:
        self.ended = reason


async def test_replay_writes_each_page_with_ids_covering_every_channel(monkeypatch) -> None:
    monkeypatch.setattr(replay, "PAGE_ROWS", 2)
    store = FakeStore({"a": range(1, 6), "b": range(1, 3)})
    live_from = {"a": 5, "b": 2}
    stream = FakeStream(("a", "b"), dict(live_from))
    plan = ResumePlan(reset={"c": "unknown id"}, replays=[("a", 2), ("b", 1)])
    assert await replay_plan(stream, plan, live_from, store)
    assert stream.written[0].startswith(b"id: a:2,b:1\nevent: stream-reset\n")
    assert stream.written[1:] == [
        b'id: a:3,b:1\nevent: t\ndata: "a3"\n\n',
        b'id: a:4,b:1\nevent: t\ndata: "a4"\n\n',
        b'id: a:5,b:1\nevent: t\ndata: "a5"\n\n',
        b'id: a:5,b:2\nevent: t\ndata: "b2"\n\n',
    ]
    assert store.pages == [("a", 2, 5), ("a", 4, 5), ("b", 1, 2)]
    assert replay.get_budget().used == 0  # everything given back


async def test_a_trim_during_the_replay_ends_the_stream(monkeypatch) -> None:
    monkeypatch.setattr(replay, "PAGE_ROWS", 2)
    store = FakeStore({"a": range(1, 11)})
    store.trim_after_page = ("a", 6)
    stream = FakeStream(("a",), {"a": 10})
    assert not await replay_plan(stream, ResumePlan(replays=[("a", 0)]), {"a": 10}, store)
    assert stream.ended == "history_trimmed"
    assert [frame.split(b"\n")[0] for frame in stream.written] == [b"id: a:1", b"id: a:2"]
    assert replay.get_budget().used == 0


@pytest.mark.parametrize("closed_at", [1, 2])
async def test_a_stream_ended_during_the_replay_stops_it(closed_at) -> None:
    store = FakeStore({"a": range(1, 1001)})
    stream = FakeStream(("a",), {"a": 1000})
    real_write = stream.write

    async def write(data: bytes) -> None:
        await real_write(data)
        if len(stream.written) == closed_at:
            stream.ended = "client_gone"

    stream.write = write  # type: ignore[method-assign]
    assert not await replay_plan(stream, ResumePlan(replays=[("a", 0)]), {"a": 1000}, store)
    assert len(store.pages) == 1
    assert replay.get_budget().used == 0
