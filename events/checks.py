"""System checks for the EVENTS_* settings: `manage.py check` names a bad one."""

from __future__ import annotations

import importlib.util
import ipaddress
import math
import os
import re
from typing import Any
from urllib.parse import urlsplit

from django.conf import settings
from django.core.checks import CheckMessage, Error, Tags, Warning, register
from django.utils.module_loading import import_string

from events.conf import DEFAULTS, conf, get


def _positive_number(name: str, check_id: str, *, integer: bool) -> list[Error]:
    value = get(name)
    # NaN compares False with everything and inf would mean "never": both are rejected.
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or (integer and not isinstance(value, int))
        or not math.isfinite(value)
        or value <= 0
    ):
        kind = "a positive integer" if integer else "a positive number"
        return [
            Error(f"{name} must be {kind}, not {value!r}.", hint=f"Default: {DEFAULTS[name]!r}.", id=check_id)
        ]
    return []


def _origins(name: str) -> list[Error]:
    origins = get(name)
    if not isinstance(origins, (list, tuple)) or not all(isinstance(o, str) for o in origins):
        return [
            Error(
                f"{name} must be a list of origins, not {origins!r}.",
                hint='For example ["https://app.example.com"].',
                id="events.E007",
            )
        ]
    errors = []
    for origin in origins:
        if origin == "*":
            errors.append(
                Error(
                    f"{name} contains '*': origins are matched exactly, and a wildcard would let "
                    "every site read streams (and, with credentials, users' streams).",
                    hint="List each origin, e.g. https://app.example.com.",
                    id="events.E013",
                )
            )
        elif not _is_origin(origin):
            errors.append(
                Error(
                    f"{name} entry {origin!r} is not an origin.",
                    hint="scheme://host[:port] as a browser sends it: lowercase, no default "
                    "port, no wildcard, no path or trailing slash.",
                    id="events.E008",
                )
            )
    return errors


def _policy(name: str, check_id: str) -> list[Error]:
    policy = get(name)
    try:
        if not isinstance(policy, str):
            raise TypeError(f"expected a dotted path string, not {type(policy).__name__}")
        if not callable(import_string(policy)):
            raise ImportError(f"{policy} is not callable")
    except (ImportError, TypeError, ValueError, AttributeError) as exc:
        return [
            Error(
                f"{name} {policy!r} is not an importable callable: {exc}",
                hint="A dotted path to a function (user, channel) -> bool.",
                id=check_id,
            )
        ]
    return []


def _non_negative_integer(name: str, check_id: str, hint: str = "0 turns the limit off.") -> list[Error]:
    value = get(name)
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        return [
            Error(
                f"{name} must be a non-negative integer, not {value!r}.",
                hint=hint,
                id=check_id,
            )
        ]
    return []


DEFAULT_PORTS = {"http": 80, "https": 443}


# A DNS name as browsers serialise it in Origin: ASCII letters, digits, hyphens and dots
# (internationalised names arrive as xn-- punycode).
_HOSTNAME = re.compile(r"[a-z0-9]([a-z0-9-]*[a-z0-9])?(\.[a-z0-9]([a-z0-9-]*[a-z0-9])?)*")


def _canonical_host(hostname: str) -> str | None:
    """The host as a browser writes it in Origin, or None if it cannot be one."""
    try:
        address = ipaddress.ip_address(hostname)
    except ValueError:
        return hostname if _HOSTNAME.fullmatch(hostname) else None
    # IPv6 in its compressed form, in brackets; IPv4 as is.
    return f"[{address.compressed}]" if address.version == 6 else address.compressed


def _is_origin(value: str) -> bool:
    """scheme://host[:port] exactly as browsers serialise it in Origin: lowercase, no
    default port, no wildcard. Origins are matched exactly (events/cors.py), so an entry
    in any other spelling (`https://App.example.com`, `https://a.com:443`,
    `https://*.example.com`, `https://bücher.de`) would silently never match."""
    if not value.isascii() or any(char.isspace() for char in value):
        return False
    try:
        parts = urlsplit(value)
        port = parts.port
    except ValueError:
        return False
    if not (parts.scheme and parts.hostname) or parts.path or parts.query or parts.fragment:
        return False
    if parts.username is not None or "%" in value:
        return False
    host = _canonical_host(parts.hostname)
    if host is None or port == 0:
        return False
    scheme = parts.scheme.lower()
    if port is not None and port != DEFAULT_PORTS.get(scheme):
        host = f"{host}:{port}"
    return value == f"{scheme}://{host}"


@register()
def check_settings(app_configs: Any = None, **kwargs: Any) -> list[Error]:
    errors: list[Error] = []
    errors += _positive_number("EVENTS_HEARTBEAT_SECONDS", "events.E001", integer=False)
    errors += _positive_number("EVENTS_RETRY_MS", "events.E002", integer=True)
    errors += _non_negative_integer(
        "EVENTS_SHUTDOWN_RETRY_SPREAD_MS", "events.E024", hint="0: every client is told EVENTS_RETRY_MS."
    )
    errors += _positive_number("EVENTS_HISTORY_PER_CHANNEL", "events.E003", integer=True)
    errors += _positive_number("EVENTS_MAX_CHANNELS_PER_STREAM", "events.E004", integer=True)
    errors += _positive_number("EVENTS_MAX_PAYLOAD_BYTES", "events.E005", integer=True)
    errors += _positive_number("EVENTS_MAX_QUEUED_BYTES", "events.E011", integer=True)
    errors += _positive_number("EVENTS_PRESENCE_TTL_SECONDS", "events.E020", integer=False)
    errors += _positive_number("EVENTS_REPLAY_BUDGET_BYTES", "events.E021", integer=True)
    errors += _positive_number("EVENTS_REPLAY_MIN_BYTES_PER_SECOND", "events.E022", integer=True)
    errors += _non_negative_integer("EVENTS_MAX_STREAMS_PER_CLIENT", "events.E012")
    errors += _non_negative_integer("EVENTS_MAX_PENDING_SETUPS_PER_CLIENT", "events.E023")
    errors += _positive_number("EVENTS_MAX_BATCH", "events.E031", integer=True)

    per_process = get("EVENTS_MAX_STREAMS_PER_PROCESS")
    if per_process is not None and (
        isinstance(per_process, bool) or not isinstance(per_process, int) or per_process <= 0
    ):
        errors.append(
            Error(
                f"EVENTS_MAX_STREAMS_PER_PROCESS must be a positive integer or None, not {per_process!r}.",
                hint="None (the default) derives it from the process's file descriptor limit.",
                id="events.E014",
            )
        )

    errors += _positive_number("EVENTS_REAUTH_SECONDS", "events.E016", integer=False)
    errors += _policy("EVENTS_CHANNEL_POLICY", "events.E006")
    errors += _policy("EVENTS_PUBLISH_POLICY", "events.E015")

    errors += _origins("EVENTS_ALLOWED_ORIGINS")
    errors += _origins("EVENTS_CREDENTIALED_ORIGINS")

    token = get("EVENTS_PUBLISH_TOKEN")
    if not isinstance(token, str):
        errors.append(Error("EVENTS_PUBLISH_TOKEN must be a string.", id="events.E009"))

    if not isinstance(get("EVENTS_METRICS_TOKEN"), str):
        errors.append(
            Error(
                "EVENTS_METRICS_TOKEN must be a string.",
                hint='"" leaves /metrics to staff.',
                id="events.E050",
            )
        )

    if not getattr(settings, "CHANNEL_LAYERS", None):
        errors.append(
            Error(
                "CHANNEL_LAYERS is not set: events cannot reach other processes.",
                hint="Use channels_redis.pubsub.RedisPubSubChannelLayer with REDIS_URL.",
                id="events.E010",
            )
        )
    return errors


# Default proxy and load-balancer idle timeouts are often 60 s (nginx proxy_read_timeout,
# AWS ALB idle timeout); a quieter stream is cut there.
PROXY_IDLE_TIMEOUT_SECONDS = 60
MIN_PUBLISH_TOKEN_LENGTH = 32


@register()
def check_deployment_mistakes(app_configs: Any = None, **kwargs: Any) -> list[Warning]:
    """The SSE deployment mistakes users keep reporting."""
    warnings: list[Warning] = []
    layers = getattr(settings, "CHANNEL_LAYERS", None) or {}
    backend = str(layers.get("default", {}).get("BACKEND", ""))
    if backend.endswith("InMemoryChannelLayer"):
        warnings.append(
            Warning(
                "The in-memory channel layer only reaches streams of the same process: events "
                "sent from another daphne process, a management command or a worker are lost.",
                hint="Use channels_redis.pubsub.RedisPubSubChannelLayer (set REDIS_URL).",
                id="events.W001",
            )
        )
    heartbeat = get("EVENTS_HEARTBEAT_SECONDS")
    if (
        isinstance(heartbeat, (int, float))
        and not isinstance(heartbeat, bool)
        and heartbeat > PROXY_IDLE_TIMEOUT_SECONDS
    ):
        warnings.append(
            Warning(
                f"EVENTS_HEARTBEAT_SECONDS is {heartbeat}: proxies commonly close connections idle "
                f"for {PROXY_IDLE_TIMEOUT_SECONDS} s, so quiet streams would be cut and reconnect.",
                hint="Keep it at or under 30.",
                id="events.W002",
            )
        )
    warnings += _size_mismatches()
    return warnings


def _size_mismatches() -> list[Warning]:
    """Limits that undercut each other: a payload the product accepts but Django's body
    limit refuses (413), or an event larger than what may queue for one stream (every
    stream that is briefly behind would be ended as a slow reader)."""
    payload, queued = get("EVENTS_MAX_PAYLOAD_BYTES"), get("EVENTS_MAX_QUEUED_BYTES")
    if not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in (payload, queued)):
        return []  # events.E0xx report the values themselves
    warnings = []
    body_limit = getattr(settings, "DATA_UPLOAD_MAX_MEMORY_SIZE", None)
    if isinstance(body_limit, int) and payload > body_limit:
        warnings.append(
            Warning(
                f"EVENTS_MAX_PAYLOAD_BYTES ({payload}) is over DATA_UPLOAD_MAX_MEMORY_SIZE "
                f"({body_limit}): POST /events/<channel>/ answers 413 for payloads the product allows.",
                hint="Raise DATA_UPLOAD_MAX_MEMORY_SIZE above EVENTS_MAX_PAYLOAD_BYTES, or lower the latter.",
                id="events.W005",
            )
        )
    if payload > queued:
        warnings.append(
            Warning(
                f"EVENTS_MAX_PAYLOAD_BYTES ({payload}) is over EVENTS_MAX_QUEUED_BYTES ({queued}): "
                "one large event can end a stream whose client is only briefly behind.",
                hint="Keep EVENTS_MAX_QUEUED_BYTES several times EVENTS_MAX_PAYLOAD_BYTES.",
                id="events.W006",
            )
        )
    return warnings


@register(Tags.security, deploy=True)
def check_publish_token(app_configs: Any = None, **kwargs: Any) -> list[Warning]:
    token = get("EVENTS_PUBLISH_TOKEN")
    if not isinstance(token, str):
        return []  # events.E009
    if not token:
        return [
            Warning(
                "EVENTS_PUBLISH_TOKEN is not set: POST /events/<channel>/ accepts only staff "
                "sessions, so servers and scripts cannot publish over HTTP.",
                hint="Set EVENTS_PUBLISH_TOKEN in the environment to a long random value.",
                id="events.W003",
            )
        ]
    if len(token) < MIN_PUBLISH_TOKEN_LENGTH:
        return [
            Warning(
                f"EVENTS_PUBLISH_TOKEN is {len(token)} characters long; anyone who guesses it can publish.",
                hint=f"Use at least {MIN_PUBLISH_TOKEN_LENGTH} random characters "
                "(python -c 'import secrets; print(secrets.token_urlsafe(32))').",
                id="events.W004",
            )
        ]
    return []


@register(Tags.security, deploy=True)
def check_metrics_token(app_configs: Any = None, **kwargs: Any) -> list[Warning]:
    token = get("EVENTS_METRICS_TOKEN")
    # Unset is fine (staff sessions only); a short one can be guessed. A string: E050.
    if not isinstance(token, str) or not token or len(token) >= MIN_PUBLISH_TOKEN_LENGTH:
        return []
    return [
        Warning(
            f"EVENTS_METRICS_TOKEN is {len(token)} characters long; anyone who guesses it reads /metrics.",
            hint=f"Use at least {MIN_PUBLISH_TOKEN_LENGTH} random characters "
            "(python -c 'import secrets; print(secrets.token_urlsafe(32))').",
            id="events.W050",
        )
    ]


@register(Tags.compatibility, deploy=True)
def check_embedded_redis(app_configs: Any = None, **kwargs: Any) -> list[Warning]:
    # The layer points at the socket that only `manage.py serve` (make run) starts.
    # Under the Procfile (daphne alone) nothing starts it.
    if not isinstance(get("EVENTS_EMBEDDED_REDIS"), (str, os.PathLike)) or not conf.embedded_redis:
        return []
    return [
        Warning(
            "EVENTS_EMBEDDED_REDIS is set (on this site: REDIS_URL is not): the channel layer uses "
            "the development Redis that `manage.py serve` starts, which a deployment (daphne "
            "alone) does not start, so every stream would end at once and /healthz would answer 503.",
            hint="Set REDIS_URL (this site) or point CHANNEL_LAYERS at the Redis shared by all daphne "
            "processes and publishers, and leave EVENTS_EMBEDDED_REDIS unset.",
            id="events.W007",
        )
    ]


def _layer_hosts() -> list[str]:
    layers = getattr(settings, "CHANNEL_LAYERS", None) or {}
    hosts = (layers.get("default", {}).get("CONFIG") or {}).get("hosts") or []
    return [host for host in hosts if isinstance(host, str)]


@register()
def check_embedded_redis_setting(app_configs: Any = None, **kwargs: Any) -> list[CheckMessage]:
    value = get("EVENTS_EMBEDDED_REDIS")
    if not isinstance(value, (str, os.PathLike)):
        return [
            Error(
                f"EVENTS_EMBEDDED_REDIS must be a path (or empty), not {value!r}.",
                hint='For example BASE_DIR / "redis.sock".',
                id="events.E030",
            )
        ]
    path = conf.embedded_redis
    if path is None or f"unix://{path}" in _layer_hosts():
        return []
    return [
        Warning(
            f"EVENTS_EMBEDDED_REDIS is {str(path)!r}, but the channel layer does not use it: "
            "`manage.py serve` would start a Redis that no event goes through.",
            hint=f'Set CHANNEL_LAYERS["default"]["CONFIG"]["hosts"] to ["unix://{path}"].',
            id="events.W031",
        )
    ]


@register(Tags.security, deploy=True)
def check_local_secret_key(app_configs: Any = None, **kwargs: Any) -> list[Warning]:
    # settings.SECRET_KEY_IS_LOCAL: no SECRET_KEY in the environment, so the key is the
    # development one under var/, which other hosts and processes do not share.
    if not getattr(settings, "SECRET_KEY_IS_LOCAL", False):
        return []
    return [
        Warning(
            "SECRET_KEY is not set: the development key kept under var/ is in use, which other "
            "hosts do not share (subscribe tokens and sessions made on one fail on another).",
            hint="Set SECRET_KEY in the environment to a long random value, the same for every process.",
            id="events.W008",
        )
    ]


def _project_asgi_application() -> str | None:
    """The dotted path of the project's ASGI application, where it can be told:
    ASGI_APPLICATION, else `application` in the asgi module beside the settings module
    (what startproject makes and `daphne mysite.asgi:application` serves)."""
    configured = getattr(settings, "ASGI_APPLICATION", None)
    if configured:
        return str(configured)
    package = (os.environ.get("DJANGO_SETTINGS_MODULE") or "").rpartition(".")[0]
    if not package:
        return None
    try:
        found = importlib.util.find_spec(f"{package}.asgi") is not None
    except (ImportError, ValueError):
        found = False
    return f"{package}.asgi.application" if found else None


@register()
def check_streams_routed(app_configs: Any = None, **kwargs: Any) -> list[CheckMessage]:
    """GET /events/... is served by events.asgi.with_streams; a project whose ASGI
    application lacks it answers every stream with an error."""
    from events.asgi import is_wrapped

    dotted = _project_asgi_application()
    if dotted is None:
        return []
    try:
        application = import_string(dotted)
    except Exception as exc:
        return [
            Warning(
                f"Could not import the ASGI application {dotted!r} to see whether it serves the "
                f"event streams: {type(exc).__name__}: {exc}",
                hint="Set ASGI_APPLICATION to the application daphne serves.",
                id="events.W032",
            )
        ]
    if is_wrapped(application):
        return []
    return [
        Warning(
            f"The ASGI application {dotted!r} does not serve the event streams: GET /events/... "
            "reaches Django's views and is answered with an error.",
            hint="In asgi.py: `from events.asgi import with_streams` and "
            "`application = with_streams(get_asgi_application())`. If a middleware of yours "
            "wraps it so that this check cannot see it, add events.W030 to SILENCED_SYSTEM_CHECKS.",
            id="events.W030",
        )
    ]


@register(Tags.security, deploy=True)
def check_streams_per_client(app_configs: Any = None, **kwargs: Any) -> list[Warning]:
    if get("EVENTS_MAX_STREAMS_PER_CLIENT") != 0:
        return []  # a limit, or a bad value (events.E012)
    return [
        Warning(
            "EVENTS_MAX_STREAMS_PER_CLIENT is 0: one client may open streams until the process "
            "runs out of connections (the per-process cap then refuses everyone with 503).",
            hint="Set a limit (the default is "
            f"{DEFAULTS['EVENTS_MAX_STREAMS_PER_CLIENT']}); behind a proxy, run daphne with "
            "--proxy-headers so that it counts browsers, not the proxy.",
            id="events.W009",
        )
    ]
