"""Tests for events/names.py: channel names and event types (README "The stream", "Python interface")."""

from __future__ import annotations

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from events import names

PROPERTY = settings(database=None, deadline=None, max_examples=300)

VALID = [
    ("a", "one-letter"),
    ("Z", "one-upper"),
    ("0", "one-digit"),
    (".", "one-dot"),
    ("_", "one-underscore"),
    ("-", "one-dash"),
    ("orders", "word"),
    ("user-42", "user-channel"),
    ("private.admin_log-2", "all-punctuation"),
    ("ABCxyz019._-", "every-class"),
    ("..", "dots"),
]

# Invalid for both channels and event types, whatever the length rule.
INVALID_CHARS = [
    ("a b", "space"),
    (" a", "leading-space"),
    ("a ", "trailing-space"),
    ("a\tb", "tab"),
    ("a\n", "trailing-newline"),
    ("\na", "leading-newline"),
    ("a\r", "cr"),
    ("a\x00", "nul"),
    ("a/b", "slash"),
    ("a:b", "colon"),
    ("a,b", "comma"),
    ("a*", "star"),
    ("a+b", "plus"),
    ("a%20b", "percent"),
    ("a?b", "question"),
    ("a#b", "hash"),
    ("\u00e9", "e-acute"),
    ("stra\u00dfe", "sharp-s"),
    ("\u65e5\u672c", "cjk"),
    ("\u0430", "cyrillic-a"),
    ("\uff21", "fullwidth-A"),
    ("\u0661", "arabic-indic-one"),
    ("\u00b2", "superscript-two"),
    ("\u2160", "roman-numeral"),
    ("K\u212a", "kelvin-sign"),
    ("\U0001f389", "emoji"),
    ("a\u2028", "u2028"),
    ("a\u200bb", "zero-width-space"),
]

NOT_STR = [
    (None, "NoneType"),
    (1, "int"),
    (1.0, "float"),
    (True, "bool"),
    (b"orders", "bytes"),
    (["orders"], "list"),
    (("orders",), "tuple"),
    (object(), "object"),
]


def _ids(rows):
    return [row[-1] for row in rows]


def test_limits():
    assert names.CHANNEL_MAX == 80
    assert names.EVENT_TYPE_MAX == 64


# --------------------------------------------------------------------------------------
# Channels
# --------------------------------------------------------------------------------------


VALID_CHANNELS = [*VALID, ("a" * 80, "max-length"), ("9" * 80, "max-length-digits")]


@pytest.mark.parametrize(("name", "_id"), VALID_CHANNELS, ids=_ids(VALID_CHANNELS))
def test_valid_channel(name, _id):
    assert names.channel_error(name) is None
    assert names.validate_channel(name) is name


@pytest.mark.parametrize(("name", "_id"), INVALID_CHARS, ids=_ids(INVALID_CHARS))
def test_channel_bad_characters(name, _id):
    error = names.channel_error(name)
    assert error == f"channel {name!r} may only contain letters, digits, '.', '_' and '-'"
    with pytest.raises(ValueError) as excinfo:
        names.validate_channel(name)
    assert str(excinfo.value) == error


@pytest.mark.parametrize(
    ("name", "shown"),
    [("", ""), ("a" * 81, "a" * 80), ("b" * 500, "b" * 80), (" " * 81, " " * 80)],
    ids=["empty", "81", "500", "81-spaces"],
)
def test_channel_bad_length(name, shown):
    error = names.channel_error(name)
    assert error == f"channel {shown!r} must be 1 to 80 characters long"
    with pytest.raises(ValueError, match="must be 1 to 80 characters long"):
        names.validate_channel(name)


@pytest.mark.parametrize(("value", "type_name"), NOT_STR, ids=_ids(NOT_STR))
def test_channel_not_a_string(value, type_name):
    error = names.channel_error(value)
    assert error == f"channel must be a string, not {type_name}"
    with pytest.raises(ValueError) as excinfo:
        names.validate_channel(value)
    assert str(excinfo.value) == error


# --------------------------------------------------------------------------------------
# Event types
# --------------------------------------------------------------------------------------


VALID_EVENT_TYPES = [*VALID, ("order-updated", "kebab"), ("a" * 64, "max-length")]


@pytest.mark.parametrize(("name", "_id"), VALID_EVENT_TYPES, ids=_ids(VALID_EVENT_TYPES))
def test_valid_event_type(name, _id):
    assert names.event_type_error(name) is None
    assert names.validate_event_type(name) is name


@pytest.mark.parametrize(("name", "_id"), INVALID_CHARS, ids=_ids(INVALID_CHARS))
def test_event_type_bad_characters(name, _id):
    error = names.event_type_error(name)
    assert error == f"event type {name!r} may only contain letters, digits, '.', '_' and '-'"
    with pytest.raises(ValueError) as excinfo:
        names.validate_event_type(name)
    assert str(excinfo.value) == error


@pytest.mark.parametrize(
    ("name", "shown"),
    [("", ""), ("a" * 65, "a" * 64), ("a" * 80, "a" * 64), ("x" * 1000, "x" * 64)],
    ids=["empty", "65", "80-valid-as-channel", "1000"],
)
def test_event_type_bad_length(name, shown):
    error = names.event_type_error(name)
    assert error == f"event type {shown!r} must be 1 to 64 characters long"
    with pytest.raises(ValueError, match="must be 1 to 64 characters long"):
        names.validate_event_type(name)


@pytest.mark.parametrize(("value", "type_name"), NOT_STR, ids=_ids(NOT_STR))
def test_event_type_not_a_string(value, type_name):
    error = names.event_type_error(value)
    assert error == f"event type must be a string, not {type_name}"
    with pytest.raises(ValueError) as excinfo:
        names.validate_event_type(value)
    assert str(excinfo.value) == error


@pytest.mark.parametrize("length", [65, 70, 80], ids=["65", "70", "80"])
def test_channel_and_event_type_limits_differ(length):
    name = "c" * length
    assert names.channel_error(name) is None
    assert names.event_type_error(name) is not None


# --------------------------------------------------------------------------------------
# Properties: the rule is exactly ASCII [A-Za-z0-9._-] with the length bounds
# --------------------------------------------------------------------------------------

_RULE = re.compile(r"[A-Za-z0-9._-]+", re.ASCII)
candidates = st.one_of(
    st.text(max_size=100),
    st.from_regex(r"[A-Za-z0-9._-]{1,90}", fullmatch=True),
    st.from_regex(r"[A-Za-z0-9._-]{0,20}[^A-Za-z0-9._-][A-Za-z0-9._-]{0,20}", fullmatch=True),
)


@PROPERTY
@given(name=candidates)
def test_property_channel_rule(name):
    expected_valid = 1 <= len(name) <= 80 and _RULE.fullmatch(name) is not None
    assert (names.channel_error(name) is None) == expected_valid
    if expected_valid:
        assert names.validate_channel(name) == name
    else:
        with pytest.raises(ValueError):
            names.validate_channel(name)


@PROPERTY
@given(name=candidates)
def test_property_event_type_rule(name):
    expected_valid = 1 <= len(name) <= 64 and _RULE.fullmatch(name) is not None
    assert (names.event_type_error(name) is None) == expected_valid
    if expected_valid:
        assert names.validate_event_type(name) == name
    else:
        with pytest.raises(ValueError):
            names.validate_event_type(name)
