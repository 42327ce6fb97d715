"""A lighter AsyncHttpConsumer for long-lived responses fed from elsewhere (the streams).

AsyncConsumer.__call__ gives each consumer a layer channel when a channel layer is
configured, and runs await_many_dispatch: for a single message source that helper
keeps a Task, an asyncio.wait() waiter and its set alive for as long as the connection
is open. A plain loop dispatches the same messages in the same order, one at a time,
with less memory per open stream (ARCHITECTURE.md, "Performance notes").

An open connection keeps one coroutine frame of this class's alive, __call__'s: a
subclass adds to it through the synchronous settle() and the coroutines cancelled()
and ended(), which run only when called, rather than by wrapping __call__ in a frame
of its own. Once the request is read, the server's connection lets go of what it no
longer needs (events/transport.py request_read()).
"""

from __future__ import annotations

import asyncio
from typing import Any

from channels.consumer import get_handler_name
from channels.exceptions import StopConsumer
from channels.generic.http import AsyncHttpConsumer

from events.transport import request_read


class PlainHttpConsumer(AsyncHttpConsumer):  # type: ignore[misc]  # channels has no type information
    # No per-connection layer channel (get_channel_layer(None) is None): the process's
    # hub listens for all streams. A class attribute, not one per instance.
    channel_layer_alias = None
    channel_layer = None

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        self.scope = scope
        self.base_send = send
        # The frame lives as long as the connection: it keeps neither the scope (the
        # subclass may let go of it), nor the request message, nor the `receive` that
        # request_read() replaced.
        del scope, send
        try:
            while True:
                message = await receive()
                if message["type"] == "http.request" and not message.get("more_body"):
                    # Read whole: only the connection's end is still to come.
                    receive = request_read(self.base_send, receive)
                await self.dispatch(message)
                del message
                self.settle()
        except StopConsumer:
            pass
        except asyncio.CancelledError:
            await self.cancelled()
            raise
        finally:
            await self.ended()

    # AsyncConsumer.dispatch, and AsyncHttpConsumer.http_disconnect, first close the
    # stale database connections of Django's one sync thread: a hop there for every
    # message (a flood of stream set-ups or ends queues on that thread), and a context
    # variable asgiref sets in the connection's task for its lifetime. Streams query on
    # threads of their own, which look after their connections (events/db.py).
    async def dispatch(self, message: dict[str, Any]) -> None:
        handler = getattr(self, get_handler_name(message), None)
        if handler is None:
            raise ValueError(f"No handler for message type {message['type']}")
        await handler(message)

    async def http_disconnect(self, message: dict[str, Any]) -> None:
        await self.disconnect()
        raise StopConsumer()

    def settle(self) -> None:
        """After each message handled (the request: the response is under way)."""

    async def cancelled(self) -> None:
        """The server cancelled the connection's task (at shutdown, say)."""

    async def ended(self) -> None:
        """The consumer ends, whichever way."""
