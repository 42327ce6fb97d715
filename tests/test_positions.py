"""Tests for events/positions.py: the SSE id a client sends back to resume (README "Resume")."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from events.positions import MAX_SEQ, format_position, parse_position

PROPERTY = settings(database=None, deadline=None, max_examples=300)


def test_max_seq_is_signed_64_bit():
    assert MAX_SEQ == 2**63 - 1 == 9223372036854775807


@pytest.mark.parametrize(
    ("positions", "channels", "expected"),
    [
        ({"orders": 12}, ["orders"], "orders:12"),
        ({"orders": 12, "audit": 7}, ["orders", "audit"], "orders:12,audit:7"),
        ({"orders": 12, "audit": 7}, ["audit", "orders"], "audit:7,orders:12"),
        ({"orders": 12, "audit": 7}, ["audit"], "audit:7"),
        ({"a": 0}, ["a"], "a:0"),
        ({"a": MAX_SEQ}, ["a"], "a:9223372036854775807"),
        ({"a.b_c-D": 3}, ("a.b_c-D",), "a.b_c-D:3"),
        ({"a": 1}, iter(["a"]), "a:1"),
    ],
    ids=["one", "two", "order-from-channels", "subset", "zero", "max", "punctuation", "iterator"],
)
def test_format_position(positions, channels, expected):
    assert format_position(positions, channels) == expected


def test_format_position_missing_channel_raises():
    with pytest.raises(KeyError):
        format_position({"a": 1}, ["a", "b"])


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("orders:12", {"orders": 12}),
        ("orders:12,audit:7", {"orders": 12, "audit": 7}),
        ("a:0", {"a": 0}),
        ("a:9223372036854775807", {"a": MAX_SEQ}),
        ("a:007", {"a": 7}),
        ("a:0000000000000000001", {"a": 1}),
        ("a.b_c-D:3", {"a.b_c-D": 3}),
        ("-:1,.:2,_:3", {"-": 1, ".": 2, "_": 3}),
        ("x" * 80 + ":1", {"x" * 80: 1}),
        ("A:1,a:2", {"A": 1, "a": 2}),
    ],
    ids=[
        "one",
        "two",
        "zero",
        "max",
        "leading-zeros",
        "nineteen-digits",
        "punctuation-channel",
        "punctuation-only-channels",
        "longest-channel",
        "case-sensitive-channels",
    ],
)
def test_parse_position(raw, expected):
    assert parse_position(raw) == expected


def test_parse_position_keeps_order():
    assert list(parse_position("z:1,a:2,m:3") or {}) == ["z", "a", "m"]


@pytest.mark.parametrize(
    "raw",
    [
        "",
        ":",
        ",",
        "orders",
        "12",
        "orders:",
        ":12",
        "orders:12,",
        ",orders:12",
        "orders:12,,audit:7",
        "orders:12;audit:7",
        "orders:12, audit:7",
        "orders:12,orders:13",
        "orders:12,audit:7,orders:12",
        "a:b:1",
        "a b:1",
        "\u00e9:1",
        "x" * 81 + ":1",
        "orders:-1",
        "orders:+1",
        "orders:1.0",
        "orders:1e3",
        "orders:0x1",
        "orders:1_000",
        "orders: 1",
        "orders:1 ",
        " orders:1",
        "orders:1\n",
        "orders:\t1",
        "orders:\u0661",
        "orders:\u0661\u0662",
        "orders:\u00b2",
        "orders:\uff11",
        "orders:9223372036854775808",
        "orders:" + "9" * 19,
        "orders:" + "1" * 20,
        "orders:" + "0" * 19 + "1",
        "orders:99999999999999999999999999999999",
        "orders:12,audit:9223372036854775808",
        "orders:12,audit:x",
        "orders:12:13",
    ],
    ids=[
        "empty",
        "only-colon",
        "only-comma",
        "missing-colon",
        "missing-channel-and-colon",
        "missing-seq",
        "missing-channel",
        "trailing-comma",
        "leading-comma",
        "double-comma",
        "semicolon-separator",
        "space-after-comma",
        "duplicate-channel",
        "duplicate-channel-later",
        "colon-in-channel",
        "space-in-channel",
        "unicode-channel",
        "channel-too-long",
        "negative",
        "plus-sign",
        "decimal-point",
        "exponent",
        "hex",
        "underscore-digits",
        "space-before-seq",
        "space-after-seq",
        "space-before-channel",
        "newline",
        "tab",
        "arabic-indic-digit",
        "arabic-indic-digits",
        "superscript-digit",
        "fullwidth-digit",
        "max-plus-one",
        "nineteen-nines",
        "twenty-digits",
        "twenty-digits-leading-zeros",
        "huge",
        "second-part-too-large",
        "second-part-not-digits",
        "two-seqs",
    ],
)
def test_parse_position_malformed(raw):
    assert parse_position(raw) is None


# --------------------------------------------------------------------------------------
# Properties
# --------------------------------------------------------------------------------------

channel_names = st.from_regex(r"[A-Za-z0-9._-]{1,80}", fullmatch=True)
position_maps = st.dictionaries(
    channel_names, st.integers(min_value=0, max_value=MAX_SEQ), min_size=1, max_size=6
)


@PROPERTY
@given(positions=position_maps)
def test_property_round_trip(positions):
    raw = format_position(positions, positions)
    assert parse_position(raw) == positions
    assert list(parse_position(raw) or {}) == list(positions)


@PROPERTY
@given(positions=position_maps, channel=channel_names, seq=st.integers(min_value=MAX_SEQ + 1))
def test_property_too_large_is_malformed(positions, channel, seq):
    positions = {**positions, channel: seq}
    assert parse_position(format_position(positions, positions)) is None


@PROPERTY
@given(raw=st.one_of(st.text(), st.from_regex(r"[a-z:,0-9\u0660-\u0669 ]{0,30}", fullmatch=True)))
def test_property_parse_never_raises(raw):
    result = parse_position(raw)
    if result is not None:
        assert result
        assert all(0 <= seq <= MAX_SEQ for seq in result.values())
        assert format_position(result, result) == ",".join(
            f"{channel}:{int(seq)}" for channel, seq in (part.rsplit(":", 1) for part in raw.split(","))
        )
