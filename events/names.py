"""Validation of channel names and event types (README "The stream", "Python interface"). Pure
functions."""

from __future__ import annotations

import re
from typing import cast

CHANNEL_MAX = 80
EVENT_TYPE_MAX = 64
_NAME = re.compile(r"[A-Za-z0-9._-]+")


def channel_error(name: object) -> str | None:
    """Why `name` is not a valid channel name, or None when it is."""
    if not isinstance(name, str):
        return f"channel must be a string, not {type(name).__name__}"
    if not 1 <= len(name) <= CHANNEL_MAX:
        return f"channel {name[:CHANNEL_MAX]!r} must be 1 to {CHANNEL_MAX} characters long"
    if not _NAME.fullmatch(name):
        return f"channel {name!r} may only contain letters, digits, '.', '_' and '-'"
    return None


def event_type_error(name: object) -> str | None:
    """Why `name` is not a valid event type, or None when it is."""
    if not isinstance(name, str):
        return f"event type must be a string, not {type(name).__name__}"
    if not 1 <= len(name) <= EVENT_TYPE_MAX:
        return f"event type {name[:EVENT_TYPE_MAX]!r} must be 1 to {EVENT_TYPE_MAX} characters long"
    if not _NAME.fullmatch(name):
        return f"event type {name!r} may only contain letters, digits, '.', '_' and '-'"
    return None


def validate_channel(name: object) -> str:
    error = channel_error(name)
    if error:
        raise ValueError(error)
    return cast(str, name)  # channel_error() accepts only strings


def validate_event_type(name: object) -> str:
    error = event_type_error(name)
    if error:
        raise ValueError(error)
    return cast(str, name)  # event_type_error() accepts only strings
