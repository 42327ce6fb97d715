"""Our checks for SSE deployment mistakes, and `check --deploy` with production settings."""

from __future__ import annotations

import os
import secrets
import subprocess
import sys

import pytest

from events.checks import (
    check_deployment_mistakes,
    check_embedded_redis,
    check_local_secret_key,
    check_publish_token,
    check_settings,
    check_streams_per_client,
)
from tests.servers import ROOT


def ids(messages) -> list[str]:
    return [message.id for message in messages]


def test_in_memory_layer_is_flagged(settings) -> None:
    settings.CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}
    assert ids(check_deployment_mistakes()) == ["events.W001"]


def test_heartbeat_longer_than_proxy_timeouts(settings) -> None:
    settings.EVENTS_HEARTBEAT_SECONDS = 90
    assert ids(check_deployment_mistakes()) == ["events.W002"]
    settings.EVENTS_HEARTBEAT_SECONDS = 30
    assert ids(check_deployment_mistakes()) == []


def test_payload_limit_over_the_body_limit_is_flagged(settings) -> None:
    settings.EVENTS_MAX_PAYLOAD_BYTES = 4 * 1024 * 1024
    settings.EVENTS_MAX_QUEUED_BYTES = 64 * 1024 * 1024
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 2_621_440
    assert ids(check_deployment_mistakes()) == ["events.W005"]
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = None  # Django's "no limit"
    assert ids(check_deployment_mistakes()) == []


def test_payload_limit_over_the_queue_bound_is_flagged(settings) -> None:
    settings.EVENTS_MAX_PAYLOAD_BYTES = 512 * 1024
    settings.EVENTS_MAX_QUEUED_BYTES = 256 * 1024
    assert ids(check_deployment_mistakes()) == ["events.W006"]
    settings.EVENTS_MAX_QUEUED_BYTES = 4 * 512 * 1024
    assert ids(check_deployment_mistakes()) == []


def test_wildcard_origin_with_credentials_is_an_error(settings) -> None:
    settings.EVENTS_ALLOWED_ORIGINS = ["*"]
    assert "events.E013" in ids(check_settings())


@pytest.mark.parametrize(
    ("token", "expected"),
    [("", ["events.W003"]), ("short", ["events.W004"]), ("x" * 40, [])],
    ids=["missing", "short", "good"],
)
def test_publish_token(settings, token, expected) -> None:
    settings.EVENTS_PUBLISH_TOKEN = token
    assert ids(check_publish_token()) == expected


NON_NEGATIVE_INTEGERS = [
    ("EVENTS_MAX_STREAMS_PER_CLIENT", "events.E012"),
    ("EVENTS_MAX_PENDING_SETUPS_PER_CLIENT", "events.E023"),
    ("EVENTS_SHUTDOWN_RETRY_SPREAD_MS", "events.E024"),
]


@pytest.mark.parametrize("value", [-1, "3", True, 1.5], ids=["negative", "string", "bool", "float"])
@pytest.mark.parametrize(("name", "check_id"), NON_NEGATIVE_INTEGERS)
def test_limits_and_the_retry_spread_must_be_non_negative_ints(settings, name, check_id, value) -> None:
    setattr(settings, name, value)
    assert ids(check_settings()) == [check_id]


def test_no_retry_spread_is_allowed(settings) -> None:
    settings.EVENTS_SHUTDOWN_RETRY_SPREAD_MS = 0
    assert ids(check_settings()) == []


def test_check_deploy_is_clean_with_production_environment() -> None:
    """Everything --deploy asks for is driven by documented environment variables."""
    env = {
        **os.environ,
        "DEBUG": "0",
        "SECRET_KEY": secrets.token_urlsafe(50),
        "ALLOWED_HOSTS": "events.example.com",
        "SECURE_SSL_REDIRECT": "1",
        "SECURE_HSTS_SECONDS": "31536000",
        "SECURE_HSTS_PRELOAD": "1",
        "EVENTS_PUBLISH_TOKEN": secrets.token_urlsafe(32),
        "REDIS_URL": "redis://127.0.0.1:6379/0",
    }
    result = subprocess.run(
        [sys.executable, "manage.py", "check", "--deploy", "--fail-level", "WARNING"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr + result.stdout
    assert "no issues" in result.stdout


def test_embedded_redis_is_flagged_for_deployment(settings) -> None:
    settings.EVENTS_EMBEDDED_REDIS = "/tmp/redis.sock"
    assert ids(check_embedded_redis()) == ["events.W007"]
    settings.EVENTS_EMBEDDED_REDIS = ""
    assert ids(check_embedded_redis()) == []


def test_check_deploy_names_what_is_missing_in_development() -> None:
    env = {**os.environ, "DEBUG": "0"}
    env.pop("REDIS_URL", None)
    env.pop("EVENTS_PUBLISH_TOKEN", None)
    env.pop("SECRET_KEY", None)
    result = subprocess.run(
        [sys.executable, "manage.py", "check", "--deploy"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    # The development key under var/ (what `make test` wrote) stands in for SECRET_KEY.
    for check_id in ("events.W008", "security.W004", "security.W008", "events.W003", "events.W007"):
        assert check_id in result.stderr + result.stdout


def test_streams_per_client_limit_off_is_flagged_for_deployment(settings) -> None:
    assert ids(check_streams_per_client()) == []  # the default is a limit
    settings.EVENTS_MAX_STREAMS_PER_CLIENT = 0
    assert ids(check_streams_per_client()) == ["events.W009"]


@pytest.mark.parametrize(
    "value", [0, -5, "100", True, 2.5], ids=["zero", "negative", "string", "bool", "float"]
)
def test_streams_per_process_must_be_positive_or_none(settings, value) -> None:
    settings.EVENTS_MAX_STREAMS_PER_PROCESS = value
    assert ids(check_settings()) == ["events.E014"]
    settings.EVENTS_MAX_STREAMS_PER_PROCESS = None
    assert ids(check_settings()) == []


def test_development_key_is_flagged_for_deployment(settings) -> None:
    settings.SECRET_KEY_IS_LOCAL = True
    assert ids(check_local_secret_key()) == ["events.W008"]
    settings.SECRET_KEY_IS_LOCAL = False
    assert ids(check_local_secret_key()) == []


def test_procfile_release_fails_on_any_deployment_warning() -> None:
    lines = (ROOT / "Procfile").read_text().splitlines()
    release = next(line for line in lines if line.startswith("release:"))
    assert "check --deploy --fail-level WARNING" in release


@pytest.mark.parametrize(
    "value", ["no.such.policy", 42, "events.conf.DEFAULTS"], ids=["missing", "int", "dict"]
)
def test_publish_policy_must_be_an_importable_callable(settings, value) -> None:
    settings.EVENTS_PUBLISH_POLICY = value
    assert ids(check_settings()) == ["events.E015"]


@pytest.mark.parametrize("value", [0, -1, "60", float("nan")], ids=["zero", "negative", "string", "nan"])
def test_reauth_interval_must_be_positive(settings, value) -> None:
    settings.EVENTS_REAUTH_SECONDS = value
    assert ids(check_settings()) == ["events.E016"]


def test_credentialed_origins_are_checked_like_allowed_ones(settings) -> None:
    settings.EVENTS_CREDENTIALED_ORIGINS = ["*"]
    assert ids(check_settings()) == ["events.E013"]
    settings.EVENTS_CREDENTIALED_ORIGINS = ["https://App.example.com/"]
    assert ids(check_settings()) == ["events.E008"]
    settings.EVENTS_CREDENTIALED_ORIGINS = "https://app.example.com"
    assert ids(check_settings()) == ["events.E007"]
    settings.EVENTS_CREDENTIALED_ORIGINS = ["https://app.example.com"]
    assert ids(check_settings()) == []
