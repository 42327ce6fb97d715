"""events/frames.py: what a stream writes of a batch, by its own position."""

from __future__ import annotations

from events.frames import framed, unwritten


def frame(channel: str, seq: int) -> tuple[str, int, bytes, bytes]:
    body = f"data: {seq}\n\n".encode()
    return (channel, seq, f"id: {channel}:{seq}\n".encode() + body, body)


def test_one_channel_writes_the_hubs_frames_past_its_position() -> None:
    positions = {"a": 2}
    batch = [frame("a", seq) for seq in (1, 2, 3, 4)]
    assert unwritten(batch, positions, ("a",)) == batch[2][2] + batch[3][2]
    assert positions == {"a": 4}


def test_nothing_new_is_nothing_written() -> None:
    positions = {"a": 4}
    assert unwritten([frame("a", 3), frame("a", 4)], positions, ("a",)) == b""
    assert positions == {"a": 4}


def test_several_channels_frame_each_body_with_an_id_covering_all() -> None:
    positions = {"a": 1, "b": 7}
    data = unwritten([frame("a", 2), frame("a", 3)], positions, ("a", "b"))
    assert data == b"id: a:2,b:7\ndata: 2\n\nid: a:3,b:7\ndata: 3\n\n"
    assert positions == {"a": 3, "b": 7}
    assert framed(positions, ("a", "b"), b"data: x\n\n") == b"id: a:3,b:7\ndata: x\n\n"
