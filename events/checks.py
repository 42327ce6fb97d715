"""System checks for the EVENTS_* settings: `manage.py check` names a bad one."""

from __future__ import annotations

import math
from typing import Any
from urllib.parse import urlsplit

from django.conf import settings
from django.core.checks import Error, register
from django.utils.module_loading import import_string

from events.conf import DEFAULTS, get


def _positive_number(name: str, check_id: str, *, integer: bool) -> list[Error]:
    value = get(name)
    types: tuple[type, ...] = (int,) if integer else (int, float)
    # NaN compares False with everything and inf would mean "never": both are rejected.
    if isinstance(value, bool) or not isinstance(value, types) or not math.isfinite(value) or value <= 0:
        kind = "a positive integer" if integer else "a positive number"
        return [Error(f"{name} must be {kind}, not {value!r}.", hint=f"Default: {DEFAULTS[name]!r}.", id=check_id)]
    return []


def _is_origin(value: str) -> bool:
    """scheme://host[:port] and nothing else, as browsers send it in Origin."""
    try:
        parts = urlsplit(value)
        parts.port  # noqa: B018  (raises ValueError for a bad port)
    except ValueError:
        return False
    return bool(parts.scheme and parts.hostname) and not (parts.path or parts.query or parts.fragment)


@register()
def check_settings(app_configs: Any = None, **kwargs: Any) -> list[Error]:
    errors: list[Error] = []
    errors += _positive_number("EVENTS_HEARTBEAT_SECONDS", "events.E001", integer=False)
    errors += _positive_number("EVENTS_RETRY_MS", "events.E002", integer=True)
    errors += _positive_number("EVENTS_HISTORY_PER_CHANNEL", "events.E003", integer=True)
    errors += _positive_number("EVENTS_MAX_CHANNELS_PER_STREAM", "events.E004", integer=True)
    errors += _positive_number("EVENTS_MAX_PAYLOAD_BYTES", "events.E005", integer=True)
    errors += _positive_number("EVENTS_MAX_QUEUED_BYTES", "events.E011", integer=True)

    policy = get("EVENTS_CHANNEL_POLICY")
    try:
        if not isinstance(policy, str):
            raise TypeError(f"expected a dotted path string, not {type(policy).__name__}")
        if not callable(import_string(policy)):
            raise ImportError(f"{policy} is not callable")
    except (ImportError, TypeError, ValueError, AttributeError) as exc:
        errors.append(
            Error(
                f"EVENTS_CHANNEL_POLICY {policy!r} is not an importable callable: {exc}",
                hint="A dotted path to a function (user, channel) -> bool.",
                id="events.E006",
            )
        )

    origins = get("EVENTS_ALLOWED_ORIGINS")
    if not isinstance(origins, (list, tuple)) or not all(isinstance(o, str) for o in origins):
        errors.append(
            Error(
                f"EVENTS_ALLOWED_ORIGINS must be a list of origins, not {origins!r}.",
                hint='For example ["https://app.example.com"].',
                id="events.E007",
            )
        )
    else:
        for origin in origins:
            if not _is_origin(origin):
                errors.append(
                    Error(
                        f"EVENTS_ALLOWED_ORIGINS entry {origin!r} is not an origin.",
                        hint="scheme://host[:port], with no path or trailing slash.",
                        id="events.E008",
                    )
                )

    token = get("EVENTS_PUBLISH_TOKEN")
    if not isinstance(token, str):
        errors.append(Error("EVENTS_PUBLISH_TOKEN must be a string.", id="events.E009"))

    if not getattr(settings, "CHANNEL_LAYERS", None):
        errors.append(
            Error(
                "CHANNEL_LAYERS is not set: events cannot reach other processes.",
                hint="Use channels_redis.pubsub.RedisPubSubChannelLayer with REDIS_URL.",
                id="events.E010",
            )
        )
    return errors
