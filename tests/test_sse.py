"""Tests for events/sse.py, the SSE wire format.

Two layers: exact bytes for every builder (so a change to the wire format is a visible
diff here), then a round trip through a small parser written from the WHATWG HTML
standard, "Interpreting an event stream", so that the bytes are also proven to *mean*
what the caller asked for, including for hypothesis-generated input.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from events import sse
from events.testing import SSEParser

# No example database: hypothesis must not write into the repository.
PROPERTY = settings(database=None, deadline=None, max_examples=300)


# --------------------------------------------------------------------------------------
# A reference parser (https://html.spec.whatwg.org/multipage/server-sent-events.html,
# "9.2.6 Interpreting an event stream"). Deliberately independent of events/sse.py and
# of events.testing.SSEParser: the one parser of the tests written apart from the
# product, so that it can check both (the round trips below, and
# test_sse_parser_agrees_with_the_reference_parser). Other tests read events with
# SSEParser.
# --------------------------------------------------------------------------------------

_EOL = re.compile(r"\r\n|\r|\n")


@dataclass
class ParsedEvent:
    type: str
    data: str
    last_event_id: str


@dataclass
class ParsedStream:
    events: list[ParsedEvent] = field(default_factory=list)
    comments: list[str] = field(default_factory=list)
    last_event_id: str = ""
    retry: int | None = None


def parse_stream(raw: bytes) -> ParsedStream:
    text = raw.decode("utf-8", errors="replace")
    # The decoder strips one leading BOM.
    if text.startswith("\ufeff"):
        text = text[1:]
    lines = _EOL.split(text)
    # Whatever follows the last line break is an incomplete line: at the end of the
    # stream, pending data is discarded (no dispatch without a blank line).
    lines.pop()

    stream = ParsedStream()
    data = ""
    event_type = ""
    last_id_buffer = ""
    for line in lines:
        if line == "":
            # Dispatch. The last event id is updated even when no event fires.
            stream.last_event_id = last_id_buffer
            if data == "":
                event_type = ""
                continue
            if data.endswith("\n"):
                data = data[:-1]
            stream.events.append(ParsedEvent(event_type or "message", data, last_id_buffer))
            data = ""
            event_type = ""
            continue
        if line.startswith(":"):
            stream.comments.append(line[1:])
            continue
        if ":" in line:
            name, _, value = line.partition(":")
            if value.startswith(" "):
                value = value[1:]
        else:
            name, value = line, ""
        if name == "event":
            event_type = value
        elif name == "data":
            data += value + "\n"
        elif name == "id":
            if "\x00" not in value:
                last_id_buffer = value
        elif name == "retry" and value and value.isascii() and value.isdigit():
            stream.retry = int(value)
        # Any other field is ignored.
    return stream


def normalize_breaks(text: str) -> str:
    return _EOL.sub("\n", text)


def single_line(text: str) -> str:
    return re.sub(r"[\r\n\x00]", "", text)


# The parser itself, against the examples of the standard, so the round trips below
# test sse.py and not a parser bug.
@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (b"data: YHOO\ndata: +2\ndata: 10\n\n", [("message", "YHOO\n+2\n10", "")]),
        (
            b": test stream\n\ndata: first event\nid: 1\n\ndata:second event\nid\n\ndata:  third event\n\n",
            [
                ("message", "first event", "1"),
                ("message", "second event", ""),
                ("message", " third event", ""),
            ],
        ),
        (b"data\n\ndata\ndata\n\ndata:", [("message", "", ""), ("message", "\n", "")]),
        (b"data:test\n\ndata: test\n\n", [("message", "test", ""), ("message", "test", "")]),
        (b"event: add\r\ndata: 73857293\r\n\r\n", [("add", "73857293", "")]),
        (b"event: a\rdata: x\r\r", [("a", "x", "")]),
        (b"\xef\xbb\xbfdata: bom\n\n", [("message", "bom", "")]),
        (b"id: 7\n\ndata: x\n\n", [("message", "x", "7")]),
        (b"id: a\x00b\ndata: x\n\n", [("message", "x", "")]),
        (b"event: gone\n\ndata: x\n\n", [("message", "x", "")]),
        (b"foo: bar\ndata: x\n\n", [("message", "x", "")]),
        (b"data: no blank line at the end\n", []),
    ],
    ids=[
        "multi-line",
        "spec-example-ids",
        "empty-data-fields",
        "optional-space",
        "crlf",
        "cr",
        "bom",
        "id-persists",
        "id-with-nul-ignored",
        "event-without-data-reset",
        "unknown-field",
        "unterminated",
    ],
)
def test_reference_parser(raw, expected):
    events = [(e.type, e.data, e.last_event_id) for e in parse_stream(raw).events]
    assert events == expected


def test_reference_parser_retry():
    assert parse_stream(b"retry: 1500\n\n").retry == 1500
    assert parse_stream(b"retry: 15x\n\n").retry is None
    assert parse_stream(b"retry: -1\n\n").retry is None


# --------------------------------------------------------------------------------------
# format_event: exact bytes
# --------------------------------------------------------------------------------------

FORMAT_EVENT_CASES = [
    # (data, kwargs, expected bytes)
    ("hello", {}, b"data: hello\n\n"),
    ("a\nb", {}, b"data: a\ndata: b\n\n"),
    ("a\rb", {}, b"data: a\ndata: b\n\n"),
    ("a\r\nb", {}, b"data: a\ndata: b\n\n"),
    ("a\rb\nc\r\nd", {}, b"data: a\ndata: b\ndata: c\ndata: d\n\n"),
    ("a\n\rb", {}, b"data: a\ndata: \ndata: b\n\n"),
    ("a\r\r\nb", {}, b"data: a\ndata: \ndata: b\n\n"),
    ("a\n\nb", {}, b"data: a\ndata: \ndata: b\n\n"),
    ("", {}, b"data: \n\n"),
    ("a\n", {}, b"data: a\ndata: \n\n"),
    ("\n", {}, b"data: \ndata: \n\n"),
    ("\r\n", {}, b"data: \ndata: \n\n"),
    ("\na", {}, b"data: \ndata: a\n\n"),
    ("h\u00e9llo \u2713", {}, "data: h\u00e9llo \u2713\n\n".encode()),
    ("a\u2028b\u2029c", {}, "data: a\u2028b\u2029c\n\n".encode()),
    ("a\x85b\x0bc\x0cd", {}, "data: a\x85b\x0bc\x0cd\n\n".encode()),
    ("\U0001f389", {}, b"data: \xf0\x9f\x8e\x89\n\n"),
    (" x", {}, b"data:  x\n\n"),
    ("  two", {}, b"data:   two\n\n"),
    ("a: b", {}, b"data: a: b\n\n"),
    (":not a comment", {}, b"data: :not a comment\n\n"),
    ("a\x00b", {}, b"data: a\x00b\n\n"),
    ('{"a":1}', {}, b'data: {"a":1}\n\n'),
    ("x", {"event": "update"}, b"event: update\ndata: x\n\n"),
    ("x", {"event": "up\r\nda\rt\ne"}, b"event: update\ndata: x\n\n"),
    ("x", {"event": "up\x00date"}, b"event: update\ndata: x\n\n"),
    ("x", {"event": ""}, b"data: x\n\n"),
    ("x", {"event": None}, b"data: x\n\n"),
    ("x", {"event": "\r\n"}, b"event: \ndata: x\n\n"),
    ("x", {"event": " spaced"}, b"event:  spaced\ndata: x\n\n"),
    ("x", {"event": "caf\u00e9"}, "event: caf\u00e9\ndata: x\n\n".encode()),
    ("x", {"id": "5"}, b"id: 5\ndata: x\n\n"),
    ("x", {"id": ""}, b"id: \ndata: x\n\n"),
    ("x", {"id": None}, b"data: x\n\n"),
    ("x", {"id": "a\x00b"}, b"id: ab\ndata: x\n\n"),
    ("x", {"id": "1\r\n\ndata: evil\r"}, b"id: 1data: evil\ndata: x\n\n"),
    ("x", {"id": "orders:12,audit:7"}, b"id: orders:12,audit:7\ndata: x\n\n"),
    ("x", {"retry": 0}, b"retry: 0\ndata: x\n\n"),
    ("x", {"retry": 3000}, b"retry: 3000\ndata: x\n\n"),
    (
        "a\nb",
        {"event": "e", "id": "1", "retry": 10},
        b"retry: 10\nid: 1\nevent: e\ndata: a\ndata: b\n\n",
    ),
]
FORMAT_EVENT_IDS = [
    "plain",
    "lf",
    "cr",
    "crlf",
    "mixed-breaks",
    "lf-then-cr-is-two-breaks",
    "cr-then-crlf-is-two-breaks",
    "double-lf",
    "empty",
    "trailing-lf",
    "only-lf",
    "only-crlf",
    "leading-lf",
    "unicode",
    "u2028-u2029-not-breaks",
    "nel-vt-ff-not-breaks",
    "emoji",
    "leading-space",
    "two-leading-spaces",
    "colon-in-data",
    "leading-colon-in-data",
    "nul-in-data-kept",
    "json",
    "event",
    "event-line-breaks-stripped",
    "event-nul-stripped",
    "event-empty-omitted",
    "event-none-omitted",
    "event-only-breaks",
    "event-leading-space",
    "event-unicode",
    "id",
    "id-empty",
    "id-none-omitted",
    "id-nul-stripped",
    "id-injection-stripped",
    "id-position",
    "retry-zero",
    "retry",
    "all-fields-in-order",
]


@pytest.mark.parametrize(("data", "kwargs", "expected"), FORMAT_EVENT_CASES, ids=FORMAT_EVENT_IDS)
def test_format_event_bytes(data, kwargs, expected):
    assert sse.format_event(data, **kwargs) == expected


def test_format_event_returns_bytes():
    assert type(sse.format_event("x")) is bytes


def test_format_event_fields_are_keyword_only():
    with pytest.raises(TypeError):
        sse.format_event("x", "event")  # type: ignore[misc]


# --------------------------------------------------------------------------------------
# The pieces: event_body, id_line, format_id, data_lines
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "event", "expected"),
    [
        ("x", None, b"data: x\n\n"),
        ("x", "", b"data: x\n\n"),
        ("x", "tick", b"event: tick\ndata: x\n\n"),
        ("a\r\nb", "t\ni\rck", b"event: tick\ndata: a\ndata: b\n\n"),
        ("", "t", b"event: t\ndata: \n\n"),
        ("\u2028", None, "data: \u2028\n\n".encode()),
    ],
    ids=["no-event", "empty-event", "event", "breaks-everywhere", "empty-data", "u2028"],
)
def test_event_body(data, event, expected):
    assert sse.event_body(data, event) == expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("1", b"id: 1\n"),
        ("", b"id: \n"),
        (" lead", b"id:  lead\n"),
        ("a\rb\nc\r\nd\x00e", b"id: abcde\n"),
        ("\x00", b"id: \n"),
        ("caf\u00e9:1", "id: caf\u00e9:1\n".encode()),
        ("a\u2028b", "id: a\u2028b\n".encode()),
    ],
    ids=["plain", "empty", "leading-space", "cr-lf-crlf-nul-stripped", "only-nul", "unicode", "u2028-kept"],
)
def test_id_line(value, expected):
    assert sse.id_line(value) == expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("1", b"id: 1\n\n"),
        ("", b"id: \n\n"),
        ("x\r\ny\x00", b"id: xy\n\n"),
    ],
    ids=["plain", "empty", "stripped"],
)
def test_format_id(value, expected):
    assert sse.format_id(value) == expected


@pytest.mark.parametrize(
    ("data", "event", "event_id"),
    [("x", None, "1"), ("a\nb", "e", "orders:3"), ("", "", "")],
    ids=["plain", "event", "empty"],
)
def test_id_line_plus_event_body_is_format_event(data, event, event_id):
    """The consumer shares one event_body between streams and prefixes each one's id."""
    assert sse.id_line(event_id) + sse.event_body(data, event) == sse.format_event(
        data, event=event, id=event_id
    )


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        ("", "data: \n"),
        ("a", "data: a\n"),
        ("a\r\nb\rc\nd", "data: a\ndata: b\ndata: c\ndata: d\n"),
        ("a\n", "data: a\ndata: \n"),
    ],
    ids=["empty", "one", "mixed", "trailing"],
)
def test_data_lines(data, expected):
    assert sse.data_lines(data) == expected


# --------------------------------------------------------------------------------------
# Comments, retry, heartbeat
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", b":\n\n"),
        ("hi", b":hi\n\n"),
        (" hi", b": hi\n\n"),
        ("a\nb", b":a\n:b\n\n"),
        ("a\r\nb\rc", b":a\n:b\n:c\n\n"),
        ("a\n", b":a\n:\n\n"),
        ("\n", b":\n:\n\n"),
        ("data: x", b":data: x\n\n"),
        ("\u2713 \U0001f389", ":\u2713 \U0001f389\n\n".encode()),
    ],
    ids=[
        "empty",
        "text",
        "leading-space",
        "lf",
        "crlf-cr",
        "trailing-lf",
        "only-lf",
        "looks-like-field",
        "unicode",
    ],
)
def test_format_comment(text, expected):
    assert sse.format_comment(text) == expected


def test_format_comment_default_is_heartbeat():
    assert sse.format_comment() == b":\n\n" == sse.HEARTBEAT


@pytest.mark.parametrize(
    ("milliseconds", "expected"),
    [
        (0, b"retry: 0\n\n"),
        (1, b"retry: 1\n\n"),
        (3000, b"retry: 3000\n\n"),
        (2**40, b"retry: 1099511627776\n\n"),
    ],
    ids=["zero", "one", "default", "huge"],
)
def test_format_retry(milliseconds, expected):
    assert sse.format_retry(milliseconds) == expected
    assert sse.format_retry_field(milliseconds) == expected[:-1]


BAD_RETRIES = [-1, -3000, True, False, 1.5, 3000.0, float("nan"), "3000", None, b"1"]
BAD_RETRY_IDS = [
    "minus-one",
    "negative",
    "true",
    "false",
    "float",
    "integral-float",
    "nan",
    "str",
    "none",
    "bytes",
]


@pytest.mark.parametrize("milliseconds", BAD_RETRIES, ids=BAD_RETRY_IDS)
def test_format_retry_rejects(milliseconds):
    with pytest.raises(ValueError, match="retry must be a non-negative integer") as excinfo:
        sse.format_retry(milliseconds)
    assert repr(milliseconds) in str(excinfo.value)


@pytest.mark.parametrize(
    "milliseconds",
    [m for m in BAD_RETRIES if m is not None],
    ids=[i for i in BAD_RETRY_IDS if i != "none"],
)
def test_format_event_rejects_bad_retry(milliseconds):
    # (retry=None is the default there: no retry field at all.)
    with pytest.raises(ValueError, match="retry must be a non-negative integer"):
        sse.format_event("x", retry=milliseconds)


# --------------------------------------------------------------------------------------
# dumps
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("payload", "expected"),
    [
        ({"a": 1, "b": [1, 2]}, '{"a":1,"b":[1,2]}'),
        ({"k": {"n": None, "t": True}}, '{"k":{"n":null,"t":true}}'),
        ([], "[]"),
        ({}, "{}"),
        (None, "null"),
        (1.5, "1.5"),
        ("caf\u00e9", '"caf\u00e9"'),
        ("\U0001f389", '"\U0001f389"'),
        ("a\u2028b\u2029c\x85", '"a\\u2028b\\u2029c\\u0085"'),
        ("a\nb\r\n", '"a\\nb\\r\\n"'),
        ("nul\x00", '"nul\\u0000"'),
        ('q"b\\', '"q\\"b\\\\"'),
        ("", '""'),
    ],
    ids=[
        "compact",
        "nested",
        "empty-list",
        "empty-object",
        "null",
        "float",
        "non-ascii-raw",
        "emoji-raw",
        "u2028-u2029-u0085-escaped",
        "line-breaks-escaped",
        "nul-escaped",
        "quotes-escaped",
        "empty-string",
    ],
)
def test_dumps(payload, expected):
    assert sse.dumps(payload) == expected


@pytest.mark.parametrize(
    "payload",
    [math.nan, math.inf, -math.inf, [1, math.nan], {"x": math.inf}],
    ids=["nan", "inf", "minus-inf", "nested-nan", "nested-inf"],
)
def test_dumps_rejects_non_finite_floats(payload):
    with pytest.raises(ValueError):
        sse.dumps(payload)


@pytest.mark.parametrize("payload", [{1, 2}, object(), b"bytes"], ids=["set", "object", "bytes"])
def test_dumps_rejects_non_json(payload):
    with pytest.raises(TypeError):
        sse.dumps(payload)


# --------------------------------------------------------------------------------------
# Round trips through the reference parser
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize(("data", "kwargs", "_expected"), FORMAT_EVENT_CASES, ids=FORMAT_EVENT_IDS)
def test_format_event_parses_back(data, kwargs, _expected):
    stream = parse_stream(sse.format_event(data, **kwargs))
    assert len(stream.events) == 1
    (event,) = stream.events
    assert event.data == normalize_breaks(data)
    assert event.type == (single_line(kwargs.get("event") or "") or "message")
    expected_id = single_line(kwargs["id"]) if kwargs.get("id") is not None else ""
    assert event.last_event_id == expected_id
    assert stream.retry == kwargs.get("retry")
    assert stream.comments == []


@pytest.mark.parametrize(
    "text",
    ["", "hi", "a\nb\r\nc", "data: evil\n\nevent: x", "\n\n\n"],
    ids=["empty", "text", "multi-line", "injection-attempt", "blank-lines"],
)
def test_comment_parses_to_no_event(text):
    stream = parse_stream(sse.format_comment(text))
    assert stream.events == []
    assert stream.comments == normalize_breaks(text).split("\n")


def test_heartbeat_parses_to_no_event():
    stream = parse_stream(sse.HEARTBEAT)
    assert stream.events == []
    assert stream.comments == [""]


def test_format_id_sets_last_event_id_without_event():
    stream = parse_stream(sse.format_id("orders:5"))
    assert stream.events == []
    assert stream.last_event_id == "orders:5"


def test_format_retry_parses_back():
    stream = parse_stream(sse.format_retry(2500))
    assert stream.events == []
    assert stream.retry == 2500


def test_whole_stream_parses_back():
    """The shape of a real stream: retry and a comment first, then events and heartbeats."""
    raw = (
        sse.format_retry(3000)
        + sse.format_comment("connected")
        + sse.format_event(sse.dumps({"n": 1}), event="tick", id="c:1")
        + sse.HEARTBEAT
        + sse.format_event(sse.dumps("two\nlines"), id="c:2")
        + sse.format_event("a\r\nb", event="raw")
    )
    stream = parse_stream(raw)
    assert stream.retry == 3000
    assert stream.comments == ["connected", ""]
    assert [(e.type, e.data, e.last_event_id) for e in stream.events] == [
        ("tick", '{"n":1}', "c:1"),
        ("message", '"two\\nlines"', "c:2"),
        ("raw", "a\nb", "c:2"),
    ]


def test_data_cannot_inject_a_second_event():
    data = "x\n\nevent: evil\nid: 666\ndata: y\r\n\r\n"
    stream = parse_stream(sse.format_event(data, event="good", id="1"))
    assert len(stream.events) == 1
    assert stream.events[0].type == "good"
    assert stream.events[0].last_event_id == "1"
    assert stream.events[0].data == normalize_breaks(data)


# --------------------------------------------------------------------------------------
# Properties
# --------------------------------------------------------------------------------------

# Text biased towards the characters that matter to the wire format.
_TRICKY = st.sampled_from(
    ["\n", "\r", "\r\n", "\x00", " ", ":", "\u2028", "\u2029", "\x85", "\ufeff", "\U0001f389"]
)
tricky_text = st.lists(st.one_of(st.text(max_size=5), _TRICKY), max_size=12).map("".join)
any_text = st.one_of(st.text(), tricky_text)


@PROPERTY
@given(data=any_text, event=st.one_of(st.none(), any_text), event_id=st.one_of(st.none(), any_text))
def test_property_format_event_round_trips(data, event, event_id):
    stream = parse_stream(sse.format_event(data, event=event, id=event_id))
    assert len(stream.events) == 1
    (parsed,) = stream.events
    assert parsed.data == normalize_breaks(data)
    # An empty event type (given or left after stripping) means the default "message".
    assert parsed.type == (single_line(event or "") or "message")
    # An id that is empty after stripping still sets the last event id, to "".
    assert parsed.last_event_id == ("" if event_id is None else single_line(event_id))


@PROPERTY
@given(data=any_text, event=any_text, event_id=any_text, retry=st.integers(min_value=0, max_value=2**63))
def test_property_format_event_with_retry_round_trips(data, event, event_id, retry):
    stream = parse_stream(sse.format_event(data, event=event, id=event_id, retry=retry))
    assert len(stream.events) == 1
    assert stream.retry == retry
    assert stream.events[0].data == normalize_breaks(data)


@PROPERTY
@given(frames=st.lists(st.tuples(any_text, any_text, any_text), max_size=8))
def test_property_concatenated_frames_stay_separate(frames):
    raw = b"".join(sse.format_event(d, event=e, id=i) for d, e, i in frames)
    stream = parse_stream(raw)
    assert [(p.data, p.type, p.last_event_id) for p in stream.events] == [
        (normalize_breaks(d), single_line(e) or "message", single_line(i)) for d, e, i in frames
    ]


@PROPERTY
@given(text=any_text)
def test_property_comment_is_invisible(text):
    raw = sse.format_comment(text) + sse.format_event("after", id="9")
    stream = parse_stream(raw)
    assert [(p.data, p.last_event_id) for p in stream.events] == [("after", "9")]
    assert stream.comments == normalize_breaks(text).split("\n")


@PROPERTY
@given(text=any_text)
def test_property_single_line_fields_have_no_breaks(text):
    for raw in (sse.id_line(text), sse.format_id(text)):
        body = raw.rstrip(b"\n")
        assert b"\r" not in body and b"\n" not in body and b"\x00" not in body
    body = sse.event_body("x", text)
    assert body.endswith(b"data: x\n\n")
    head = body[: -len(b"data: x\n\n")]
    assert b"\r" not in head and b"\x00" not in head and head.count(b"\n") == (1 if text else 0)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | any_text,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(any_text, children, max_size=4),
    max_leaves=20,
)


@PROPERTY
@given(payload=json_values)
def test_property_dumps_is_one_line_json(payload):
    text = sse.dumps(payload)
    assert "\n" not in text and "\r" not in text
    assert json.loads(text) == payload
    stream = parse_stream(sse.format_event(text, event="e", id="1"))
    assert len(stream.events) == 1
    assert json.loads(stream.events[0].data) == payload


# The frames exactly as the server writes them: the hub's (one channel) and the
# consumer's (several channels, the id covering each), from any valid channel names,
# event type and JSON payload.
valid_names = st.text(alphabet="abcXYZ019._-", min_size=1, max_size=80)
valid_types = st.text(alphabet="abcXYZ019._-", min_size=1, max_size=64)


@PROPERTY
@given(
    channels=st.lists(valid_names, min_size=1, max_size=4, unique=True),
    seqs=st.lists(st.integers(min_value=0, max_value=2**62), min_size=4, max_size=4),
    event_type=valid_types,
    payload=json_values,
)
def test_property_frames_as_written_round_trip(channels, seqs, event_type, payload):
    from events.positions import format_position, parse_position

    positions = dict(zip(channels, seqs, strict=False))
    event_id = format_position(positions, channels)
    frame = sse.id_line(event_id) + sse.event_body(sse.dumps(payload), event_type)
    stream = parse_stream(sse.format_retry(3000) + sse.format_comment("ok") + frame + sse.HEARTBEAT)
    assert len(stream.events) == 1
    (parsed,) = stream.events
    assert (parsed.type, parsed.last_event_id) == (event_type, event_id)
    assert json.loads(parsed.data) == payload
    assert parse_position(parsed.last_event_id) == positions


@pytest.mark.parametrize("char", ["\u2028", "\u2029", "\x85"], ids=["LS", "PS", "NEL"])
def test_json_data_never_carries_other_line_breaks(char: str) -> None:
    """A client that splits lines with str.splitlines() (or an old JavaScript line
    reader) would cut the frame at these: JSON payloads carry them escaped."""
    payload = {"text": f"one{char}two", "list": [char, f"{char}{char}"]}
    frame = sse.format_event(sse.dumps(payload), event="note", id="c:1")
    assert char.encode() not in frame
    lines = frame.decode().splitlines()
    assert lines == ["id: c:1", "event: note", f"data: {sse.dumps(payload)}", ""]
    assert json.loads(lines[2].removeprefix("data: ")) == payload


# --------------------------------------------------------------------------------------
# events.testing.SSEParser, which the other tests (and users' tests) read streams with,
# against the reference parser: the same events on any stream, fed in any chunks.
# --------------------------------------------------------------------------------------

_FIELD_LINES = st.sampled_from(
    [
        "",
        ":",
        ": note",
        "data",
        "data:",
        "data: x",
        "data:  two",
        "event: e",
        "event",
        "id: 7",
        "id",
        "id: a\x00b",
    ]
    + ["retry: 250", "retry: 2x", "retry", "unknown: field", "data: \u00e9\u20ac", "data: \ufeff"]
)
_ANY_LINE = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\r\n"), max_size=6)
_STREAMS = st.tuples(
    st.booleans(),  # a BOM first
    st.lists(
        st.tuples(st.one_of(_FIELD_LINES, _ANY_LINE), st.sampled_from(["\n", "\r", "\r\n"])), max_size=24
    ),
)


@PROPERTY
@given(stream=_STREAMS, data=st.data())
def test_sse_parser_agrees_with_the_reference_parser(stream, data):
    bom, lines = stream
    raw = ("\ufeff" if bom else "").encode() + "".join(line + eol for line, eol in lines).encode()
    # Cut anywhere: inside a UTF-8 character, between the CR and LF of a CRLF.
    cuts = sorted(data.draw(st.lists(st.integers(0, len(raw)), max_size=6)))
    parser = SSEParser()
    events = []
    for start, end in zip([0, *cuts], [*cuts, len(raw)], strict=True):
        events += parser.feed(raw[start:end])
    reference = parse_stream(raw)
    assert [(e.type, e.data, e.id) for e in events] == [
        (e.type, e.data, e.last_event_id) for e in reference.events
    ]
    assert parser.retry == reference.retry
    assert parser.comments == len(reference.comments)
