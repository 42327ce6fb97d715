"""Logging helpers for the project's LOGGING setting."""

from __future__ import annotations

import logging


class OneLineFormatter(logging.Formatter):
    """The message without its traceback: for expected rejections that Django logs with
    exc_info (a request with a Host outside ALLOWED_HOSTS is answered 400; its stack
    says nothing an operator needs, and scanners send thousands of them)."""

    def format(self, record: logging.LogRecord) -> str:
        record = logging.makeLogRecord({**record.__dict__, "exc_info": None, "exc_text": None})
        return super().format(record)
