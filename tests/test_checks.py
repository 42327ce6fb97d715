"""Tests for events/checks.py: each bad EVENTS_* value gets exactly its own check id."""

from __future__ import annotations

import io
import math

import pytest
from django.core.checks import Error
from django.core.management import call_command
from django.core.management.base import SystemCheckError

from events.checks import check_settings
from events.conf import DEFAULTS


def allow_all(user, channel):
    """A valid custom EVENTS_CHANNEL_POLICY."""
    return True


NOT_CALLABLE = 42


def check_ids():
    return [error.id for error in check_settings()]


def test_project_settings_pass(settings):
    assert check_settings() == []


def test_defaults_pass(settings):
    for name in DEFAULTS:
        if hasattr(settings, name):
            delattr(settings, name)
    assert check_settings() == []


@pytest.mark.parametrize(("name", "value"), list(DEFAULTS.items()), ids=list(DEFAULTS))
def test_each_default_passes_when_set_explicitly(settings, name, value):
    setattr(settings, name, value)
    assert check_settings() == []


# --------------------------------------------------------------------------------------
# The positive numbers, E001-E005
# --------------------------------------------------------------------------------------

NUMBER_SETTINGS = [
    ("EVENTS_HEARTBEAT_SECONDS", "events.E001"),
    ("EVENTS_RETRY_MS", "events.E002"),
    ("EVENTS_HISTORY_PER_CHANNEL", "events.E003"),
    ("EVENTS_MAX_CHANNELS_PER_STREAM", "events.E004"),
    ("EVENTS_MAX_PAYLOAD_BYTES", "events.E005"),
    ("EVENTS_REPLAY_BUDGET_BYTES", "events.E021"),
    ("EVENTS_REPLAY_MIN_BYTES_PER_SECOND", "events.E022"),
    ("EVENTS_MAX_BATCH", "events.E031"),
]
INTEGER_SETTINGS = NUMBER_SETTINGS[1:]

# Bad for every one of them.
BAD_NUMBERS = [
    (0, "zero"),
    (-1, "negative"),
    (-0.5, "negative-float"),
    (0.0, "zero-float"),
    (True, "true"),
    (False, "false"),
    ("15", "str"),
    (None, "none"),
    ([15], "list"),
    (b"15", "bytes"),
]


@pytest.mark.parametrize(("name", "check_id"), NUMBER_SETTINGS, ids=[n for n, _ in NUMBER_SETTINGS])
@pytest.mark.parametrize(("value", "_id"), BAD_NUMBERS, ids=[i for _, i in BAD_NUMBERS])
def test_bad_number(settings, name, check_id, value, _id):
    setattr(settings, name, value)
    errors = check_settings()
    assert [error.id for error in errors] == [check_id]
    (error,) = errors
    assert isinstance(error, Error)
    assert name in error.msg
    assert repr(value) in error.msg
    assert error.hint == f"Default: {DEFAULTS[name]!r}."


@pytest.mark.parametrize(("name", "check_id"), INTEGER_SETTINGS, ids=[n for n, _ in INTEGER_SETTINGS])
@pytest.mark.parametrize("value", [1.5, 3000.0, 0.001], ids=["fraction", "integral-float", "small"])
def test_integer_settings_reject_floats(settings, name, check_id, value):
    setattr(settings, name, value)
    assert check_ids() == [check_id]
    assert "a positive integer" in check_settings()[0].msg


@pytest.mark.parametrize(("name", "_check_id"), INTEGER_SETTINGS, ids=[n for n, _ in INTEGER_SETTINGS])
@pytest.mark.parametrize("value", [1, 2, 10**9], ids=["one", "two", "big"])
def test_integer_settings_accept_positive_ints(settings, name, _check_id, value):
    setattr(settings, name, value)
    assert check_ids() == []


@pytest.mark.parametrize("value", [15, 15.0, 0.5, 0.001, 1], ids=["int", "float", "half", "tiny", "one"])
def test_heartbeat_accepts_positive_numbers(settings, value):
    settings.EVENTS_HEARTBEAT_SECONDS = value
    assert check_ids() == []


def test_heartbeat_message_says_number(settings):
    settings.EVENTS_HEARTBEAT_SECONDS = 0
    assert "a positive number" in check_settings()[0].msg


def test_heartbeat_nan_rejected(settings):
    settings.EVENTS_HEARTBEAT_SECONDS = math.nan
    assert check_ids() == ["events.E001"]


# --------------------------------------------------------------------------------------
# EVENTS_CHANNEL_POLICY, E006
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "value",
    [
        "events.policy.default_policy",
        "tests.test_checks.allow_all",
        "builtins.print",
        "events.policy.load_policy",
    ],
    ids=["default", "custom", "builtin", "any-callable"],
)
def test_good_policy(settings, value):
    settings.EVENTS_CHANNEL_POLICY = value
    assert check_ids() == []


@pytest.mark.parametrize(
    "value",
    [
        "",
        "nodots",
        "events.policy.nope",
        "no_such_module_xyz.func",
        "events.policy",
        "events.conf.DEFAULTS",
        "tests.test_checks.NOT_CALLABLE",
        "events.policy.default_policy ",
    ],
    ids=[
        "empty",
        "no-dots",
        "missing-attribute",
        "missing-module",
        "module",
        "dict",
        "int",
        "trailing-space",
    ],
)
def test_bad_policy(settings, value):
    settings.EVENTS_CHANNEL_POLICY = value
    errors = check_settings()
    assert [error.id for error in errors] == ["events.E006"]
    assert repr(value) in errors[0].msg


@pytest.mark.parametrize("value", [None, 123, ["events.policy.default_policy"]], ids=["none", "int", "list"])
def test_non_string_policy(settings, value):
    settings.EVENTS_CHANNEL_POLICY = value
    assert check_ids() == ["events.E006"]


# --------------------------------------------------------------------------------------
# EVENTS_ALLOWED_ORIGINS, E007 and E008
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "value",
    [
        [],
        (),
        ["https://app.example.com"],
        ("https://app.example.com", "http://localhost:8000"),
        ["http://127.0.0.1:8000"],
        ["http://[::1]:8000"],
        ["https://app.example.com:8443"],
        ["https://xn--bcher-kva.de"],
        ["http://localhost:3000"],
    ],
    ids=[
        "empty-list",
        "empty-tuple",
        "one",
        "tuple",
        "ip-port",
        "ipv6-port",
        "other-port",
        "punycode",
        "localhost",
    ],
)
def test_good_origins(settings, value):
    settings.EVENTS_ALLOWED_ORIGINS = value
    assert check_ids() == []


@pytest.mark.parametrize(
    "value",
    [
        "https://app.example.com",
        None,
        {"https://app.example.com"},
        {"https://app.example.com": True},
        [1],
        ["https://app.example.com", None],
        ("https://app.example.com", b"https://b.example.com"),
    ],
    ids=["bare-string", "none", "set", "dict", "int-entry", "none-entry", "bytes-entry"],
)
def test_origins_not_a_list_of_str(settings, value):
    settings.EVENTS_ALLOWED_ORIGINS = value
    errors = check_settings()
    assert [error.id for error in errors] == ["events.E007"]
    assert repr(value) in errors[0].msg


@pytest.mark.parametrize(
    "origin",
    [
        "https://app.example.com/",
        "app.example.com",
        "https://",
        "",
        "localhost:8000",
        "https://a.com//",
        "https://*.example.com",
        "https://App.Example.com",
        "HTTPS://app.example.com",
        "https://a.com:443",
        "http://a.com:80",
        "https://user@a.com",
        "https://a.com ",
        "https://a b.com",
        "https://bücher.de",
        "http://[0:0::1]",
        "http://a.com:0",
        "http://[fe80::1%25eth0]",
    ],
    ids=[
        "trailing-slash",
        "no-scheme",
        "no-host",
        "empty",
        "host-port",
        "double-slash",
        "wildcard-subdomain",
        "uppercase-host",
        "uppercase-scheme",
        "default-https-port",
        "default-http-port",
        "userinfo",
        "trailing-space",
        "space-in-host",
        "not-punycode",
        "ipv6-not-compressed",
        "port-zero",
        "ipv6-zone",
    ],
)
def test_bad_origin_entry(settings, origin):
    settings.EVENTS_ALLOWED_ORIGINS = ["https://ok.example.com", origin]
    errors = check_settings()
    assert [error.id for error in errors] == ["events.E008"]
    assert repr(origin) in errors[0].msg


def test_one_error_per_bad_origin(settings):
    settings.EVENTS_ALLOWED_ORIGINS = ["a.example.com", "https://ok.example.com", "b.example.com/"]
    errors = check_settings()
    assert [error.id for error in errors] == ["events.E008", "events.E008"]
    assert "'a.example.com'" in errors[0].msg
    assert "'b.example.com/'" in errors[1].msg


def test_origin_with_path_rejected(settings):
    settings.EVENTS_ALLOWED_ORIGINS = ["https://app.example.com/path"]
    assert check_ids() == ["events.E008"]


# --------------------------------------------------------------------------------------
# EVENTS_PUBLISH_TOKEN, E009; CHANNEL_LAYERS, E010
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("value", ["", "s3cret", "x" * 200], ids=["empty", "token", "long"])
def test_good_token(settings, value):
    settings.EVENTS_PUBLISH_TOKEN = value
    assert check_ids() == []


@pytest.mark.parametrize("value", [None, 123, b"s3cret", ["s3cret"]], ids=["none", "int", "bytes", "list"])
def test_bad_token(settings, value):
    settings.EVENTS_PUBLISH_TOKEN = value
    assert check_ids() == ["events.E009"]


@pytest.mark.parametrize("value", [{}, None], ids=["empty", "none"])
def test_no_channel_layers(settings, value):
    settings.CHANNEL_LAYERS = value
    assert check_ids() == ["events.E010"]


def test_channel_layers_unset(settings):
    del settings.CHANNEL_LAYERS
    assert check_ids() == ["events.E010"]


# --------------------------------------------------------------------------------------
# All together, and registration
# --------------------------------------------------------------------------------------


def test_every_problem_reported_once_in_order(settings):
    settings.EVENTS_HEARTBEAT_SECONDS = 0
    settings.EVENTS_RETRY_MS = -1
    settings.EVENTS_HISTORY_PER_CHANNEL = 0
    settings.EVENTS_MAX_CHANNELS_PER_STREAM = "10"
    settings.EVENTS_MAX_PAYLOAD_BYTES = None
    settings.EVENTS_CHANNEL_POLICY = "events.policy.nope"
    settings.EVENTS_ALLOWED_ORIGINS = "https://app.example.com"
    settings.EVENTS_PUBLISH_TOKEN = 1
    settings.CHANNEL_LAYERS = {}
    assert check_ids() == [f"events.E{n:03d}" for n in range(1, 8)] + ["events.E009", "events.E010"]


def test_check_accepts_app_configs(settings):
    settings.EVENTS_RETRY_MS = 0
    assert [e.id for e in check_settings(app_configs=None)] == ["events.E002"]
    assert [e.id for e in check_settings(app_configs=[], databases=None)] == ["events.E002"]


def test_checks_are_registered(settings):
    """manage.py check runs the events checks (registered in EventsConfig.ready())."""
    settings.EVENTS_RETRY_MS = 0
    with pytest.raises(SystemCheckError, match=r"events\.E002") as excinfo:
        call_command("check", stdout=io.StringIO(), stderr=io.StringIO())
    assert "EVENTS_RETRY_MS" in str(excinfo.value)


def test_check_command_passes_with_good_settings(settings):
    out = io.StringIO()
    call_command("check", stdout=out, stderr=io.StringIO())
    assert "events." not in out.getvalue()
