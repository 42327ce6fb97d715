from __future__ import annotations

import logging

import pytest
import redis.exceptions

from events.log import log_failure

logger = logging.getLogger("tests.log_failure")


def test_an_outage_is_one_warning_line_naming_its_cause(caplog: pytest.LogCaptureFixture) -> None:
    try:
        try:
            raise redis.exceptions.ConnectionError("Connection refused\nmore")
        except redis.exceptions.ConnectionError as exc:
            raise RuntimeError("joining failed") from exc
    except RuntimeError as exc:
        with caplog.at_level(logging.WARNING, logger=logger.name):
            log_failure(logger, exc, "joining channel %r failed", "news")
    (record,) = caplog.records
    assert record.levelno == logging.WARNING
    assert record.getMessage() == "joining channel 'news' failed (ConnectionError: Connection refused)"
    assert record.exc_info is None


def test_a_bug_is_logged_with_its_traceback(caplog: pytest.LogCaptureFixture) -> None:
    try:
        raise KeyError("seq")
    except KeyError as exc:
        with caplog.at_level(logging.WARNING, logger=logger.name):
            log_failure(logger, exc, "delivering %s failed", "news:3")
    (record,) = caplog.records
    assert record.levelno == logging.ERROR
    assert record.getMessage() == "delivering news:3 failed"
    assert record.exc_info is not None and record.exc_info[1] is not None
