"""events/fanout.py: one channel's events handed to its local streams."""

from __future__ import annotations

from events import metrics
from events.fanout import LocalChannel
from events.messages import EVENT_MESSAGE


class Recorder:
    last_write = 0.0
    channels = ("c",)

    def __init__(self, fails: bool = False) -> None:
        self.fails = fails
        self.chunks: list[bytes] = []
        self.closed: list[str] = []

    async def deliver(self, channel, seq, frame, body) -> None:
        raise AssertionError("the fan-out hands batches")

    async def deliver_batch(self, channel, batch, chunk) -> None:
        if self.fails:
            raise RuntimeError("a bug in this stream's write")
        self.chunks.append(chunk)

    async def heartbeat(self) -> None:
        pass

    async def close_stream(self, *, reason) -> None:
        self.closed.append(reason)


def event(seq: int, **extra) -> dict:
    return {"type": EVENT_MESSAGE, "channel": "c", "seq": seq, "event": "message", "data": str(seq), **extra}


async def test_a_stream_whose_write_fails_is_ended_and_the_others_get_the_events() -> None:
    """Its position has moved past events it may not have had: it is ended (the client
    resumes), not left open with a silent gap."""
    channel = LocalChannel("c", store=None)  # type: ignore[arg-type]
    broken, fine = Recorder(fails=True), Recorder()
    channel.subscribers.update([broken, fine])
    await channel.fan_out([event(1), event(2)])
    assert broken.closed == ["error"]
    frames = b"id: c:1\nevent: message\ndata: 1\n\nid: c:2\nevent: message\ndata: 2\n\n"
    assert fine.chunks == [frames] and fine.closed == []


async def test_a_commit_time_that_is_not_a_number_is_no_lag_and_no_error() -> None:
    """Any process may send on the layer: a bad `committed_at` must not stop the events."""
    channel = LocalChannel("c", store=None)  # type: ignore[arg-type]
    fine = Recorder()
    channel.subscribers.add(fine)
    before = metrics.DELIVERY_LAG._sum.get()
    await channel.fan_out([event(1, committed_at="yesterday"), event(2, committed_at=None)])
    assert len(fine.chunks) == 1
    assert metrics.DELIVERY_LAG._sum.get() == before
