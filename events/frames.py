"""What a stream writes of a batch of frames: the rules of a stream's own position.

Pure: the consumer (events/consumers.py) calls it on its live path and at the hand-over
from replay; the sequencer has already put each channel's events in order, once.
"""

from __future__ import annotations

from collections.abc import Sequence

from events import sse
from events.positions import format_position

# One event for one stream: (channel, seq, frame as the hub encoded it, event body).
Frame = tuple[str, int, bytes, bytes]


def framed(positions: dict[str, int], channels: tuple[str, ...], body: bytes) -> bytes:
    """An event body with the id line of a stream: its position on every channel."""
    return sse.id_line(format_position(positions, channels)) + body


def unwritten(batch: Sequence[Frame], positions: dict[str, int], channels: tuple[str, ...]) -> bytes:
    """The frames of `batch` past the stream's position, joined, with the position moved
    to each: a seq at or below it is one the stream already has (from the replay, or
    twice from the hub). A stream of one channel writes the hub's frames as they are
    (the same bytes for every such stream); one of several channels frames each body
    again, with an id covering all of them."""
    single = len(channels) == 1
    parts = []
    for channel, seq, frame, body in batch:
        if seq <= positions.get(channel, 0):
            continue
        positions[channel] = seq
        parts.append(frame if single else framed(positions, channels, body))
    return parts[0] if len(parts) == 1 else b"".join(parts)
