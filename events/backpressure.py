"""How many bytes a stream has queued in the server, waiting for a slow client.

Under daphne the ASGI `send` never waits: http.response.body goes straight into
Twisted's transport buffer, which grows without bound while a client does not read.
That buffer is where a slow consumer's data actually queues, so that is what we
measure. The ASGI `send` daphne hands the application is
`functools.partial(server.handle_reply, request)`; routing.py keeps it in the scope.
Under other servers this returns None and no bound applies here.
"""

from __future__ import annotations

import functools
from typing import Any

SERVER_SEND_KEY = "events.server_send"


def transport_of(server_send: Any) -> Any:
    if not isinstance(server_send, functools.partial) or not server_send.args:
        return None
    request = server_send.args[0]
    channel = getattr(request, "channel", None)
    return getattr(channel, "transport", None)


def queued_bytes(transport: Any) -> int | None:
    """Bytes written to a Twisted TCP transport and not yet taken by the kernel."""
    try:
        return len(transport.dataBuffer) - transport.offset + transport._tempDataLen
    except (AttributeError, TypeError):
        return None
