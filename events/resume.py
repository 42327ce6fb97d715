"""Where a stream starts, and the replay that brings its client up to the live events.

A stream's client gives the last id it has (or none: the stream starts at the store's
position, read before the response head). plan_resume() decides per channel, from a
HistoryReader (the store; tests fake it): replay from the id, or reset (the id is
malformed, does not cover the channel, was never handed out, or is older than the
retained history). replay_plan() then writes the stored events up to the hub's
position, a page at a time within the process's budget (events/replay.py), waiting for
a client that reads slowly and ending one that reads too slowly; catch_up() does both,
then hands the stream over to live delivery (the frames it held meanwhile first).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from events import metrics, replay, sse, store
from events.conf import conf
from events.db import stream_db
from events.frames import Frame
from events.positions import format_position, parse_position
from events.transport import Transport

logger = logging.getLogger(__name__)

STREAM_RESET = "stream-reset"
# A replay writes its next page once its client has taken all but this share of
# EVENTS_MAX_QUEUED_BYTES (a page is at most half of it: events/replay.py).
REPLAY_LOW_WATER_FACTOR = 4
# A replay waiting for its client measures the client's rate over at least this long
# before it may end it as too slow (EVENTS_REPLAY_MIN_BYTES_PER_SECOND).
REPLAY_RATE_WINDOW_SECONDS = 5.0
# How often a replay waiting for its client looks at what is queued.
REPLAY_POLL_SECONDS = 0.05

# Live frames held for one stream while it replays from the store; a stream that falls
# this far behind (in frames, or in bytes: PENDING_BYTES_FACTOR x EVENTS_MAX_QUEUED_BYTES)
# is ended and resumes instead, keeping what it has already written.
MAX_PENDING_FRAMES = 10_000
PENDING_BYTES_FACTOR = 4

Bounds = tuple[dict[str, int], dict[str, int | None]]


class HeldFrames:
    """The live frames a stream receives while it replays, until it goes live."""

    __slots__ = ("frames", "nbytes", "limit")

    def __init__(self, limit: int) -> None:
        self.frames: list[Frame] = []
        self.nbytes = 0
        self.limit = limit

    @classmethod
    def for_replay(cls) -> HeldFrames:
        # The setting read once: hold() checks the bound for every frame held.
        return cls(PENDING_BYTES_FACTOR * conf.max_queued_bytes)

    def hold(self, frame: Frame) -> bool:
        """Keep a frame; True when the stream has fallen too far behind. Frames are
        shared by every stream of the channel, but a stream that has fallen far behind
        must not pin an unbounded amount of them."""
        self.frames.append(frame)
        self.nbytes += len(frame[2])
        return len(self.frames) > MAX_PENDING_FRAMES or self.nbytes > self.limit

    def hold_many(self, frames: Sequence[Frame]) -> bool:
        """Keep a batch of frames (hold(), with both bounds checked once)."""
        self.frames.extend(frames)
        self.nbytes += sum(len(frame[2]) for frame in frames)
        return len(self.frames) > MAX_PENDING_FRAMES or self.nbytes > self.limit

    def take(self) -> list[Frame]:
        frames, self.frames, self.nbytes = self.frames, [], 0
        return frames


# What a stream that is not replaying holds: nothing (and never will: a replaying stream
# holds its frames in a HeldFrames of its own).
NOTHING_HELD = HeldFrames(0)


class HistoryReader(Protocol):
    async def bounds(self, ahead: list[str], wanted: list[str]) -> Bounds:
        """The last committed seq of each `ahead` channel, and the oldest stored seq of
        each `wanted` one (None: nothing stored)."""

    async def page(
        self, channel: str, after: int, upto: int, max_bytes: int, rows: int
    ) -> tuple[list[Any], int]:
        """Stored events after `after` up to `upto`, at most `max_bytes` of data (at
        least one event), oldest first; and their size (store.page_within)."""


def _bounds(ahead: list[str], wanted: list[str]) -> Bounds:
    # Both in one trip to the database threads.
    return (store.last_seqs(ahead) if ahead else {}), (store.first_seqs(wanted) if wanted else {})


def _page(channel: str, after: int, upto: int, max_bytes: int, rows: int) -> tuple[list[Any], int]:
    # Looked up at each call, so that a store function replaced in a test is seen.
    return store.page_within(channel, after, upto, max_bytes, rows)


class StoreReader:
    """The store, read on the streams' database threads (events/db.py)."""

    bounds = staticmethod(stream_db(_bounds))
    page = staticmethod(stream_db(_page))


STORE: HistoryReader = StoreReader()


class PositionSource(Protocol):
    async def read(self, channel: str) -> int: ...


async def start_positions(positions: PositionSource, channels: Sequence[str]) -> dict[str, int]:
    """Each channel's last committed seq, from the hub's batched reader (`hub.positions`):
    requests arriving together share its queries. Read before the response head, so
    that an event committed once the client has the head (EventSource's `open`) is after
    the start, and reaches the stream from the store if the hub is older. A resume id is
    its own start; the read still runs, so that a database that is down is a 503 before
    any byte."""
    if len(channels) == 1:
        return {channels[0]: await positions.read(channels[0])}
    return dict(
        zip(channels, await asyncio.gather(*(positions.read(name) for name in channels)), strict=True)
    )


@dataclass
class ResumePlan:
    """Channels to reset (and why), and per other channel the seq to replay after."""

    reset: dict[str, str] = field(default_factory=dict)
    replays: list[tuple[str, int]] = field(default_factory=list)


async def plan_resume(
    channels: Sequence[str], live_from: dict[str, int], resume: str, reader: HistoryReader
) -> ResumePlan:
    """The plan for a client resuming from `resume` while the hub hands it every event
    after `live_from` (the events themselves are read page by page as the replay goes)."""
    parsed = parse_position(resume)
    if parsed is None:
        return ResumePlan(reset=dict.fromkeys(channels, "malformed id"))
    plan = ResumePlan()
    wanted: list[str] = []
    ahead: dict[str, int] = {}
    for channel in channels:
        after = parsed.get(channel)
        if after is None:
            plan.reset[channel] = "id does not cover this channel"
        elif after > live_from[channel]:
            # Past what this process has delivered: either a process that is ahead
            # (the client was on another one, or this one is behind on a burst) or an
            # id this server never gave out. The store tells which.
            ahead[channel] = after
        elif after < live_from[channel]:
            wanted.append(channel)
    committed, firsts = await reader.bounds(list(ahead), wanted) if (ahead or wanted) else ({}, {})
    for channel, after in ahead.items():
        if after > committed[channel]:
            plan.reset[channel] = "unknown id"
    for channel in channels:
        if channel in plan.reset:
            continue
        after = parsed[channel]
        first = firsts.get(channel)
        # Seqs have no holes (events/store.py), and trimming deletes the oldest: the
        # history reaches the id only if its oldest event is at most the next one.
        if channel in wanted and (first is None or first > after + 1):
            plan.reset[channel] = "id is older than the retained history"
            continue
        plan.replays.append((channel, after))
    return plan


class ReplayTarget(Protocol):
    """What the replay needs of a stream (events/consumers.py)."""

    channels: tuple[str, ...]
    positions: dict[str, int]
    transport: Transport

    async def go_live(self) -> None: ...

    @property
    def closed(self) -> bool: ...

    async def write(self, data: bytes) -> None: ...

    def framed(self, body: bytes) -> bytes: ...

    async def close_stream(self, *, abort: bool = False, reason: metrics.CloseReason = "error") -> None: ...


async def catch_up(
    stream: ReplayTarget, live_from: dict[str, int], resume_id: str, reader: HistoryReader = STORE
) -> None:
    """Replay what the client missed after `resume_id`, then hand the stream over to live
    delivery. Everything after `live_from` reaches the stream from the hub (held
    meanwhile); everything up to it comes from the store. Seqs at or below the position
    already written are skipped, so the hand-over has no gap and no duplicate."""
    stream.positions = dict(live_from)
    plan = await plan_resume(stream.channels, live_from, resume_id, reader)
    if not await replay_plan(stream, plan, live_from, reader):
        return
    # Set the client's last id even if no event has come yet, so that a reconnect
    # before the first event still resumes from here.
    await stream.write(sse.format_id(format_position(stream.positions, stream.channels)))
    metrics.flush()  # the replay's figures, now rather than at the next heartbeat tick
    await stream.go_live()


def _ended(stream: ReplayTarget) -> bool:
    # A call, not the attribute: the stream may end during any await, which a type
    # checker's narrowing of an attribute does not know.
    return stream.closed


def reset_body(reset: dict[str, str]) -> bytes:
    return sse.event_body(sse.dumps({"channels": sorted(reset), "reasons": reset}), STREAM_RESET)


async def replay_plan(
    stream: ReplayTarget, plan: ResumePlan, live_from: dict[str, int], reader: HistoryReader
) -> bool:
    """Carry out `plan`: the stream-reset, then each channel's stored events up to
    `live_from`. False when the stream has ended meanwhile."""
    # Every frame's id covers all channels, so set each replayed channel back to its
    # resume point before writing anything.
    for channel, after in plan.replays:
        stream.positions[channel] = after
    metrics.resumed(plan.reset.values(), any(after < live_from[c] for c, after in plan.replays))
    if plan.reset:
        await stream.write(stream.framed(reset_body(plan.reset)))
    share = replay.Share(replay.get_budget())
    try:
        for channel, _ in plan.replays:
            if not await _replay_channel(stream, channel, live_from[channel], reader, share):
                return False
    finally:
        share.settle(0)
    return not _ended(stream)


async def _replay_channel(
    stream: ReplayTarget, channel: str, upto: int, reader: HistoryReader, share: replay.Share
) -> bool:
    bound = replay.page_bytes()
    while stream.positions[channel] < upto:
        if not await _wait_writable(stream, share):
            return False
        # Waits, holding no page, while other replays hold the process's budget.
        await share.for_page(bound)
        if _ended(stream):
            return False
        done = stream.positions[channel]
        events, size = await reader.page(channel, done, upto, bound, replay.PAGE_ROWS)
        share.settle(size)  # count what the page holds, not its bound
        if _ended(stream):
            return False
        if not events or events[0].seq != done + 1:
            # Trimmed while we were replaying: end the stream; the client resumes
            # from its last id and is told that the history no longer reaches it.
            logger.warning("channel %r was trimmed past a replay in progress; ending it", channel)
            await stream.close_stream(reason="history_trimmed")
            return False
        # The whole page at once: the client has room for it (see _wait_writable).
        for event in events:
            stream.positions[channel] = event.seq
            metrics.tally.replayed += 1
            await stream.write(stream.framed(sse.event_body(event.data, event.type)))
        del events
    return True


async def _wait_writable(stream: ReplayTarget, share: replay.Share) -> bool:
    """Before a replay reads its next page: wait until the client has taken most of
    what is queued (what it has taken no longer counts against the budget), and end it
    if it takes less than the minimum rate. False when the stream has ended."""
    transport = stream.transport
    queued = transport.queued()  # under a server that does not tell: it took the page
    share.settle(queued)
    low_water = conf.max_queued_bytes // REPLAY_LOW_WATER_FACTOR
    if queued <= low_water or not transport.bounded:
        return not _ended(stream)
    loop = asyncio.get_running_loop()
    started, at_start = loop.time(), queued
    min_rate = conf.replay_min_bytes_per_second
    while not _ended(stream):
        await asyncio.sleep(REPLAY_POLL_SECONDS)
        queued = transport.queued()
        share.settle(queued)
        if queued <= low_water:
            return not _ended(stream)
        waited = loop.time() - started
        if waited >= REPLAY_RATE_WINDOW_SECONDS and at_start - queued < min_rate * waited:
            logger.warning(
                "stream %s read its replay at under %d bytes/s; ending it", stream.channels, min_rate
            )
            await stream.close_stream(abort=True, reason="slow_reader")
    return False
