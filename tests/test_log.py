"""Logging helpers: outage errors in one line, channels-redis' reconnect tracebacks
dropped, and the product's lines printed once under a server that configures the root
logger (daphne does)."""

from __future__ import annotations

import logging
import subprocess
import sys

import redis.exceptions
from django.db import OperationalError

from events.log import LayerReconnectFilter, describe, outage
from tests.servers import ROOT


def record(error: BaseException | None) -> logging.LogRecord:
    exc_info = (type(error), error, None) if error is not None else None
    return logging.LogRecord("channels_redis.pubsub", logging.ERROR, __file__, 1, "msg", (), exc_info)


def test_reconnect_tracebacks_are_dropped_other_errors_pass() -> None:
    keep = LayerReconnectFilter().filter
    assert not keep(record(redis.exceptions.ConnectionError("Error 111 connecting")))
    assert not keep(record(ConnectionRefusedError(111, "refused")))
    assert not keep(record(redis.exceptions.TimeoutError("Timeout reading")))
    assert keep(record(KeyError("a bug")))
    assert keep(record(None))


def test_outage_finds_the_cause_behind_a_wrapper() -> None:
    try:
        try:
            raise OperationalError('connection to server at "127.0.0.1" failed\nIs the server running?')
        except OperationalError as exc:
            raise RuntimeError("joining channel 'a' failed") from exc
    except RuntimeError as wrapped:
        cause = outage(wrapped)
    assert isinstance(cause, OperationalError)
    assert describe(cause) == 'OperationalError: connection to server at "127.0.0.1" failed'
    assert outage(ValueError("a bug")) is None


def test_product_lines_are_printed_once_when_the_root_logger_has_a_handler() -> None:
    code = (
        "import logging, django\n"
        "logging.basicConfig(level=logging.INFO)\n"  # as daphne's command line does
        "django.setup()\n"
        "logging.getLogger('events.hub').warning('a line of note')\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        env={"DJANGO_SETTINGS_MODULE": "site_config.settings", "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert result.stderr.count("a line of note") == 1, result.stderr
