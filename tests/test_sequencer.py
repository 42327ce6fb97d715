"""The delivery rules of events/sequencer.py, with a fake store and a fake outlet: no
Redis, no database, no streams."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from datetime import UTC, datetime

import pytest

from events import sequencer as sequencer_module
from events.messages import EVENT_MESSAGE
from events.sequencer import Sequencer, reconcile

CHANNEL = "orders"


@dataclass
class Row:
    seq: int
    type: str
    data: str
    created: datetime = field(default_factory=lambda: datetime.now(UTC))


@dataclass
class FakeStore:
    """The stored events of each channel (seqs may start late: trimmed)."""

    rows: dict[str, list[Row]] = field(default_factory=dict)
    pages: list[tuple[str, int, int, int]] = field(default_factory=list)
    queries: list[list[str]] = field(default_factory=list)
    # When set, a page read waits for it (to let other calls in meanwhile).
    gate: asyncio.Event | None = None
    # Called during last_seqs, before it answers.
    during_query: list = field(default_factory=list)

    def store(self, channel: str, *seqs: int) -> None:
        self.rows.setdefault(channel, []).extend(Row(seq, "message", f'"{seq}"') for seq in seqs)

    async def page(self, channel: str, after: int, upto: int, limit: int) -> list[Row]:
        self.pages.append((channel, after, upto, limit))
        if self.gate is not None:
            await self.gate.wait()
        rows = [row for row in self.rows.get(channel, []) if after < row.seq <= upto]
        return sorted(rows, key=lambda row: row.seq)[:limit]

    async def last_seqs(self, channels: list[str]) -> dict[str, int]:
        self.queries.append(list(channels))
        for action in self.during_query:
            action()
        return {name: max((row.seq for row in self.rows.get(name, [])), default=0) for name in channels}


@dataclass
class FakeOutlet:
    handed: list[int] = field(default_factory=list)
    batches: list[list[int]] = field(default_factory=list)
    # The sequencer's position when each batch was handed over.
    positions: list[int] = field(default_factory=list)
    ended: list[str] = field(default_factory=list)
    filled: list[int] = field(default_factory=list)
    messages: list[dict] = field(default_factory=list)
    sequencer: Sequencer | None = None

    async def fan_out(self, events) -> None:
        assert self.sequencer is not None
        self.positions.append(self.sequencer.position)
        seqs = [event["seq"] for event in events]
        self.batches.append(seqs)
        self.handed.extend(seqs)
        self.messages.extend(events)
        channel = self.sequencer.channel
        assert all(event["channel"] == channel and event["type"] == EVENT_MESSAGE for event in events)
        await asyncio.sleep(0)  # a real fan-out awaits every stream's write

    async def end_streams(self, reason: str) -> None:
        self.ended.append(reason)

    def gap_filled(self, events: int) -> None:
        self.filled.append(events)


def message(seq: int, channel: str = CHANNEL) -> dict:
    return {"type": EVENT_MESSAGE, "channel": channel, "seq": seq, "event": "message", "data": f'"{seq}"'}


def make(store: FakeStore | None = None, channel: str = CHANNEL) -> tuple[Sequencer, FakeOutlet, FakeStore]:
    store = store or FakeStore()
    outlet = FakeOutlet()
    sequencer = Sequencer(channel, store, outlet)
    outlet.sequencer = sequencer
    return sequencer, outlet, store


async def started(position: int = 0, store: FakeStore | None = None):
    sequencer, outlet, store = make(store)
    await sequencer.start(position)
    return sequencer, outlet, store


# -- order and duplicates -------------------------------------------------------------


async def test_messages_in_order_are_handed_on_one_by_one() -> None:
    sequencer, outlet, store = await started(position=3)
    for seq in (4, 5, 6):
        await sequencer.receive(message(seq))
    assert outlet.batches == [[4], [5], [6]]
    assert sequencer.position == 6
    assert store.pages == []  # nothing read from the store


async def test_the_position_covers_a_batch_before_it_is_handed_on() -> None:
    """A stream added during a fan-out reads its position from the sequencer: it must
    already include what is being handed on (or the stream would get it twice)."""
    store = FakeStore()
    store.store(CHANNEL, 1, 2, 3)
    sequencer, outlet, _ = await started(position=0, store=store)
    await sequencer.receive(message(4))
    assert outlet.batches == [[1, 2, 3], [4]]
    assert outlet.positions == [3, 4]


@pytest.mark.parametrize("seq", [5, 4, 1])
async def test_a_seq_at_or_below_the_position_is_dropped(seq: int) -> None:
    sequencer, outlet, store = await started(position=5)
    await sequencer.receive(message(seq))
    assert outlet.handed == []
    assert sequencer.position == 5
    assert store.pages == []


async def test_a_message_received_twice_is_handed_on_once() -> None:
    sequencer, outlet, _ = await started(position=0)
    for seq in (1, 2, 2, 1, 3):
        await sequencer.receive(message(seq))
    assert outlet.handed == [1, 2, 3]


# -- gaps -----------------------------------------------------------------------------


async def test_a_gap_is_filled_from_the_store_before_the_message() -> None:
    store = FakeStore()
    store.store(CHANNEL, 1, 2, 3, 4, 5)
    sequencer, outlet, _ = await started(position=2, store=store)
    await sequencer.receive(message(5))
    assert outlet.handed == [3, 4, 5]
    assert store.pages == [(CHANNEL, 2, 4, sequencer_module.FILL_PAGE)]
    assert outlet.filled == [2]
    assert outlet.ended == []


async def test_a_long_gap_is_read_a_page_at_a_time(monkeypatch) -> None:
    monkeypatch.setattr(sequencer_module, "FILL_PAGE", 2)
    store = FakeStore()
    store.store(CHANNEL, *range(1, 8))
    sequencer, outlet, _ = await started(position=0, store=store)
    await sequencer.receive(message(7))
    assert outlet.batches == [[1, 2], [3, 4], [5, 6], [7]]
    assert [after for _, after, _, _ in store.pages] == [0, 2, 4]
    assert outlet.filled == [6]


async def test_a_message_arriving_during_a_fill_waits_for_it() -> None:
    """A fill, a live message and a reconciliation of one channel never interleave."""
    store = FakeStore(gate=asyncio.Event())
    store.store(CHANNEL, 1, 2, 3)
    sequencer, outlet, _ = await started(position=0, store=store)
    filling = asyncio.create_task(sequencer.receive(message(3)))
    while not store.pages:
        await asyncio.sleep(0)
    live = asyncio.create_task(sequencer.receive(message(4)))
    for _ in range(5):
        await asyncio.sleep(0)
    assert outlet.handed == []  # the live message waits for the fill
    store.gate.set()
    await asyncio.gather(filling, live)
    assert outlet.handed == [1, 2, 3, 4]


async def test_a_failing_store_raises_and_a_later_message_fills_the_gap() -> None:
    store = FakeStore()
    store.store(CHANNEL, 1, 2)
    sequencer, outlet, _ = await started(position=0, store=store)

    async def down(*args):
        raise ConnectionError("the database is down")

    store.page = down
    with pytest.raises(ConnectionError):
        await sequencer.receive(message(2))
    assert (outlet.handed, sequencer.position) == ([], 0)
    del store.page  # the class's page again
    await sequencer.receive(message(3))
    assert outlet.handed == [1, 2, 3]


# -- early messages -------------------------------------------------------------------


async def test_messages_before_the_position_is_known_are_held() -> None:
    sequencer, outlet, store = make()
    await sequencer.receive(message(4))
    await sequencer.receive(message(5))
    assert outlet.handed == []
    assert store.pages == []
    assert not sequencer.ready.is_set()


async def test_held_messages_are_taken_once_the_position_is_known() -> None:
    """Joined the group, then read the position: what arrived in between and is covered
    by the position is dropped (the stream replays it from the store); the rest is
    handed on, in order."""
    sequencer, outlet, store = make()
    for seq in (3, 4, 5):
        await sequencer.receive(message(seq))
    await sequencer.start(4)
    assert sequencer.ready.is_set()
    assert outlet.handed == [5]
    assert sequencer.position == 5
    assert store.pages == []


async def test_a_gap_between_the_position_and_a_held_message_is_filled() -> None:
    store = FakeStore()
    store.store(CHANNEL, 1, 2, 3)
    sequencer, outlet, _ = make(store)
    await sequencer.receive(message(3))
    await sequencer.start(1)
    assert outlet.handed == [2, 3]


async def test_a_failed_join_sets_ready_with_its_error_and_drops_what_was_held() -> None:
    sequencer, outlet, _ = make()
    await sequencer.receive(message(1))
    error = ConnectionError("Redis is down")
    sequencer.fail(error)
    assert sequencer.ready.is_set()
    assert sequencer.error is error
    await sequencer.start(0)  # never happens after a failure; nothing held is left either way
    assert outlet.handed == []


# -- trimmed history ------------------------------------------------------------------


async def test_a_page_that_starts_late_ends_the_streams_and_moves_on() -> None:
    store = FakeStore()
    store.store(CHANNEL, 6, 7, 8, 9)  # 1..5 trimmed
    sequencer, outlet, _ = await started(position=0, store=store)
    await sequencer.receive(message(10))
    assert outlet.ended == ["history_trimmed"]
    # What is left after the hole is handed on (to the streams that remain: none of the
    # ended ones), and so is the message.
    assert outlet.handed == [6, 7, 8, 9, 10]
    assert sequencer.position == 10


async def test_a_gap_trimmed_entirely_ends_the_streams_and_takes_the_message() -> None:
    store = FakeStore()  # nothing stored: all of 1..9 trimmed
    sequencer, outlet, _ = await started(position=0, store=store)
    await sequencer.receive(message(10))
    assert outlet.ended == ["history_trimmed"]
    assert outlet.handed == [10]
    assert sequencer.position == 10
    assert len(store.pages) == 1  # moved on: no second read of the hole


async def test_streams_are_ended_before_anything_after_the_hole_is_handed_on() -> None:
    store = FakeStore()
    store.store(CHANNEL, 4, 5)
    sequencer, outlet, _ = await started(position=0, store=store)
    order: list[str] = []
    fan_out, end_streams = outlet.fan_out, outlet.end_streams

    async def recording_fan_out(events) -> None:
        order.append("fan_out")
        await fan_out(events)

    async def recording_end(reason: str) -> None:
        order.append("end")
        await end_streams(reason)

    outlet.fan_out, outlet.end_streams = recording_fan_out, recording_end
    await sequencer.receive(message(6))
    assert order == ["end", "fan_out", "fan_out"]


# -- reconciliation -------------------------------------------------------------------


async def test_reconciliation_fills_up_to_the_stores_last_seq() -> None:
    """A message lost with no later one to reveal the gap."""
    store = FakeStore()
    store.store(CHANNEL, 1, 2, 3)
    sequencer, outlet, _ = await started(position=1, store=store)
    await reconcile(store, [sequencer])
    assert outlet.handed == [2, 3]
    assert outlet.filled == [2]
    assert sequencer.position == 3


async def test_reconciliation_asks_the_store_once_for_every_started_channel() -> None:
    store = FakeStore()
    store.store("a", 1)
    store.store("b", 1, 2)
    a, a_out, _ = make(store, "a")
    b, b_out, _ = make(store, "b")
    joining, joining_out, _ = make(store, "c")
    await a.start(1)
    await b.start(0)
    await reconcile(store, [a, b, joining])
    assert store.queries == [["a", "b"]]  # the one not yet started is not asked for
    assert (a_out.handed, b_out.handed, joining_out.handed) == ([], [1, 2], [])


async def test_reconciliation_with_nothing_new_reads_no_page() -> None:
    store = FakeStore()
    store.store(CHANNEL, 1, 2)
    sequencer, outlet, _ = await started(position=2, store=store)
    await reconcile(store, [sequencer])
    assert (outlet.handed, store.pages, outlet.filled) == ([], [], [])


async def test_reconciliation_skips_nothing_when_nothing_is_started() -> None:
    store = FakeStore()
    sequencer, _, _ = make(store)
    await reconcile(store, [sequencer])
    assert store.queries == []


async def test_a_channel_left_during_the_query_is_not_filled() -> None:
    store = FakeStore()
    store.store(CHANNEL, 1, 2)
    sequencer, outlet, _ = await started(position=0, store=store)
    store.during_query.append(sequencer.stop)
    await reconcile(store, [sequencer])
    assert outlet.handed == []
    assert store.pages == []


async def test_stopped_and_failed_channels_are_not_reconciled() -> None:
    store = FakeStore()
    store.store(CHANNEL, 1)
    stopped, _, _ = await started(position=0, store=store)
    stopped.stop()
    failed, _, _ = make(store)
    failed.fail(ConnectionError("down"))
    await reconcile(store, [stopped, failed])
    assert store.queries == []


# -- a pass's batch (the hub hands a channel's share of one pass at once) ---------------


async def test_a_batch_in_order_is_handed_on_in_one_fan_out() -> None:
    sequencer, outlet, _ = await started(position=0)
    await sequencer.receive_many([message(1), message(2), message(3)])
    assert outlet.batches == [[1, 2, 3]]
    assert outlet.positions == [3]  # the position covers the batch before it is handed on


async def test_a_batch_with_a_gap_and_a_duplicate_hands_each_seq_once_in_order() -> None:
    store = FakeStore()
    store.store(CHANNEL, 1, 2, 3, 4, 5, 6)
    sequencer, outlet, _ = await started(position=0, store=store)
    await sequencer.receive_many([message(1), message(2), message(2), message(4), message(1), message(5)])
    # 3 is read from the store before 4, after what came before it was handed on.
    assert outlet.batches == [[1, 2], [3], [4, 5]]
    await sequencer.receive_many([message(5), message(6)])
    assert outlet.handed == [1, 2, 3, 4, 5, 6]


async def test_a_failing_fill_in_a_batch_does_not_stop_the_later_messages() -> None:
    store = FakeStore()
    store.store(CHANNEL, 1, 2, 3, 4)
    sequencer, outlet, _ = await started(position=0, store=store)
    calls = 0

    async def down_once(*args):
        nonlocal calls
        calls += 1
        if calls == 1:
            raise ConnectionError("the database is down")
        return await FakeStore.page(store, *args)

    store.page = down_once
    with pytest.raises(ConnectionError):
        await sequencer.receive_many([message(1), message(3), message(4)])
    # 1 was handed on before the failing fill; 4 filled 2..3 as it would alone.
    assert outlet.handed == [1, 2, 3, 4]


async def test_a_batch_before_the_position_is_known_is_held_then_taken_in_order() -> None:
    sequencer, outlet, _ = make()
    await sequencer.receive_many([message(2), message(3), message(3)])
    assert outlet.handed == []
    await sequencer.start(1)
    assert outlet.batches == [[2, 3]]


async def test_one_channel_failing_its_catch_up_does_not_stop_the_others() -> None:
    store = FakeStore()
    store.store("a", 1, 2)
    store.store("b", 1, 2)
    a, a_out, _ = make(store, "a")
    b, b_out, _ = make(store, "b")
    await a.start(0)
    await b.start(0)

    async def broken_fan_out(events) -> None:
        raise RuntimeError("a bug in a's outlet")

    a_out.fan_out = broken_fan_out
    with pytest.raises(RuntimeError, match="a bug"):
        await reconcile(store, [a, b])
    assert b_out.handed == [1, 2]  # b after a, caught up all the same


async def test_an_event_filled_from_the_store_carries_its_stored_time() -> None:
    """Its delivery lag is measured from it (metrics.delivered), as a message's is from
    its commit: an event that reached streams late, through the store, shows as late."""
    store = FakeStore()
    store.store(CHANNEL, 1, 2)
    sequencer, outlet, _ = await started(position=0, store=store)
    await sequencer.receive(message(3))  # a gap: 1 and 2 come from the store
    assert outlet.batches == [[1, 2], [3]]
    stored_at = [row.created.timestamp() for row in store.rows[CHANNEL]]
    assert [m.get("committed_at") for m in outlet.messages] == [*stored_at, None]
