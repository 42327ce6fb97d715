"""daphne's access log without subscribe tokens.

A stream opened by EventSource carries its token in the URL (`?token=`: EventSource
cannot send headers), and daphne logs every request's full URL. The token is a bearer
credential until it expires, so the access log gets `token=[redacted]` instead. Clients
that can send headers may pass the token as `Authorization: Bearer <token>` instead.
"""

from __future__ import annotations

import re
from typing import Any

_TOKEN_IN_QUERY = re.compile(r"([?&]token=)[^&\s\"]*")


def redact(request_line: str) -> str:
    return _TOKEN_IN_QUERY.sub(r"\1[redacted]", request_line)


def install() -> None:
    """Make daphne's access log write redacted request lines (in this process)."""
    try:
        from daphne.access import AccessLogGenerator
    except ImportError:
        return
    if AccessLogGenerator.write_entry.__module__ == __name__:
        return  # installed already: the method is this module's
    original = AccessLogGenerator.write_entry

    def write_entry(self: Any, host: Any, date: Any, request: str, *args: Any, **kwargs: Any) -> None:
        original(self, host, date, redact(request), *args, **kwargs)

    AccessLogGenerator.write_entry = write_entry
