"""A lighter AsyncHttpConsumer for long-lived responses fed from elsewhere (the streams).

AsyncConsumer.__call__ gives each consumer a layer channel when a channel layer is
configured, and runs await_many_dispatch: for a single message source that helper
keeps a Task, an asyncio.wait() waiter and its set alive for as long as the connection
is open. A plain loop dispatches the same messages in the same order, one at a time,
with less memory per open stream (ARCHITECTURE.md, "Performance notes").
"""

from __future__ import annotations

from typing import Any

from channels.exceptions import StopConsumer
from channels.generic.http import AsyncHttpConsumer


class PlainHttpConsumer(AsyncHttpConsumer):  # type: ignore[misc]  # channels has no type information
    # No per-connection layer channel (get_channel_layer(None) is None): the process's
    # hub listens for all streams.
    channel_layer_alias = None

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        self.scope = scope
        self.channel_layer = None
        self.base_send = send
        try:
            while True:
                await self.dispatch(await receive())
        except StopConsumer:
            pass
