"""The SSE wire format (WHATWG HTML, "Server-sent events"): plain values in, bytes out.

No Django and no I/O here. Field values that must stay on one line (id, event) lose any
CR, LF and NUL; data is split on every line break the spec knows (CRLF, CR, LF) into one
`data:` line each, so no input can add or split a frame.
"""

from __future__ import annotations

import json
import re
from typing import Any

_LINE_BREAK = re.compile(r"\r\n|\r|\n")
_FORBIDDEN_IN_FIELD = re.compile(r"[\r\n\x00]")

HEARTBEAT = b":\n\n"


# Line separators outside the SSE spec's CR/LF that line-splitting clients still split on
# (Python's str.splitlines(), JavaScript's old line terminators): written as JSON escapes,
# which decode to the same characters, so no client splits a frame on them.
_OTHER_LINE_BREAKS = {ord("\u2028"): "\\u2028", ord("\u2029"): "\\u2029", ord("\x85"): "\\u0085"}
_HAS_OTHER_LINE_BREAK = re.compile("[\u2028\u2029\x85]")


def dumps(payload: Any) -> str:
    """Serialise a payload as compact JSON (raises ValueError/TypeError if it cannot)."""
    text = json.dumps(payload, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    # These characters can only occur inside JSON strings, where an escape means the same.
    return text.translate(_OTHER_LINE_BREAKS) if _HAS_OTHER_LINE_BREAK.search(text) else text


def _field(name: str, value: str) -> str:
    # One space after the colon: parsers strip exactly one, so a value that itself
    # starts with a space survives.
    return f"{name}: {value}\n"


def _single_line(value: str) -> str:
    return _FORBIDDEN_IN_FIELD.sub("", value)


def normalise_line_breaks(text: str) -> str:
    """CRLF and CR as LF: what a client reassembles from the `data:` lines anyway."""
    return _LINE_BREAK.sub("\n", text)


def data_lines(data: str) -> str:
    """`data:` lines for a payload; an empty payload is one empty `data:` line."""
    return "".join(_field("data", line) for line in _LINE_BREAK.split(data))


def format_id(event_id: str) -> bytes:
    """An `id:` field on its own: sets the client's last event id without an event."""
    return _field("id", _single_line(event_id)).encode() + b"\n"


def event_body(data: str, event: str | None = None) -> bytes:
    """A frame without its id line, so one encoding can be shared by many streams."""
    head = _field("event", _single_line(event)) if event else ""
    return (head + data_lines(data) + "\n").encode()


def id_line(event_id: str) -> bytes:
    return _field("id", _single_line(event_id)).encode()


def format_event(
    data: str,
    *,
    event: str | None = None,
    id: str | None = None,  # noqa: A002  (the SSE field's own name)
    retry: int | None = None,
) -> bytes:
    """One complete frame: optional retry, id and event fields, data lines, blank line."""
    head = b""
    if retry is not None:
        head += format_retry_field(retry)
    if id is not None:
        head += id_line(id)
    return head + event_body(data, event)


def format_retry_field(milliseconds: int) -> bytes:
    if isinstance(milliseconds, bool) or not isinstance(milliseconds, int) or milliseconds < 0:
        raise ValueError(f"retry must be a non-negative integer of milliseconds, not {milliseconds!r}")
    return f"retry: {milliseconds}\n".encode()


def format_retry(milliseconds: int) -> bytes:
    """A block that only sets the client's reconnection delay."""
    return format_retry_field(milliseconds) + b"\n"


def format_comment(text: str = "") -> bytes:
    """A comment block (ignored by clients, keeps proxies from timing out)."""
    return "".join(f":{line}\n" for line in _LINE_BREAK.split(text)).encode() + b"\n"
