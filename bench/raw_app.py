"""The ceiling: a minimal raw ASGI SSE server, run on uvicorn (uvloop + httptools).

    uvicorn bench.raw_app:app

One Redis pub/sub subscription per process; each message is encoded into an SSE frame
once and the same bytes are sent to every open connection. No Django, no store, no
resume, no per-stream state beyond the ASGI `send`: what any Python SSE server on this
machine must at least spend per delivery.
"""

from __future__ import annotations

import asyncio
import os
from typing import Any

import redis.asyncio as redis

CHANNEL_PREFIX = "/events/"
HEADERS = [(b"content-type", b"text/event-stream"), (b"cache-control", b"no-cache")]

_streams: dict[str, set[Any]] = {}
_listener: asyncio.Task[None] | None = None


async def _listen() -> None:
    client = redis.Redis.from_url(os.environ["REDIS_URL"])
    pubsub = client.pubsub()
    await pubsub.psubscribe("*")
    async for message in pubsub.listen():
        if message["type"] != "pmessage":
            continue
        sends = _streams.get(message["channel"].decode())
        if not sends:
            continue
        body = {
            "type": "http.response.body",
            "body": b"event: bench\ndata: " + message["data"] + b"\n\n",
            "more_body": True,
        }
        for send in list(sends):
            try:  # noqa: SIM105  (contextlib.suppress would cost a context manager per delivery)
                await send(body)
            except Exception:  # the client went away: its receive() ends the stream
                pass


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    global _listener
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                _listener = asyncio.create_task(_listen())
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                if _listener is not None:
                    _listener.cancel()
                await send({"type": "lifespan.shutdown.complete"})
                return
    path = scope["path"]
    if scope["type"] != "http" or not path.startswith(CHANNEL_PREFIX) or not path.endswith("/"):
        await send({"type": "http.response.start", "status": 404, "headers": []})
        await send({"type": "http.response.body", "body": b""})
        return
    channel = path[len(CHANNEL_PREFIX) : -1]
    await send({"type": "http.response.start", "status": 200, "headers": HEADERS})
    sends = _streams.setdefault(channel, set())
    sends.add(send)  # before the first bytes: a client that saw them is subscribed
    await send({"type": "http.response.body", "body": b":ok\n\n", "more_body": True})
    try:
        while (await receive())["type"] != "http.disconnect":
            pass
    finally:
        sends.discard(send)
