"""Stream positions: the SSE id a client sends back to resume. Pure functions.

An id names, for every channel of the stream, the last `seq` delivered on it:
`orders:12` for a one-channel stream, `orders:12,audit:7` for several. The separators
`:` and `,` never occur in channel names, so parsing is unambiguous.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from events.names import channel_error

MAX_SEQ = 2**63 - 1


def format_position(positions: Mapping[str, int], channels: Iterable[str]) -> str:
    return ",".join(f"{channel}:{positions[channel]}" for channel in channels)


def parse_position(raw: str) -> dict[str, int] | None:
    """The channel -> seq map of an id, or None when the id is malformed."""
    if not raw:
        return None
    result: dict[str, int] = {}
    for part in raw.split(","):
        channel, sep, seq = part.rpartition(":")
        if not sep or channel_error(channel) or channel in result:
            return None
        if not (seq.isascii() and seq.isdigit()) or len(seq) > 19:
            return None
        value = int(seq)
        if value > MAX_SEQ:
            return None
        result[channel] = value
    return result
