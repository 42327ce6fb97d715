"""Helpers for tests of streams: unique channel names, and the SSE consumer driven
through channels.testing communicators."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

from channels.testing import ApplicationCommunicator

Headers = list[tuple[bytes, bytes]]


def channel(prefix: str = "test") -> str:
    """A channel name no other test uses (the tests share one Redis and database)."""
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


def http_scope(
    path: str, query: bytes = b"", headers: list[tuple[bytes, bytes]] | None = None, method: str = "GET"
) -> dict[str, Any]:
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": query,
        "headers": [(b"host", b"testserver"), *(headers or [])],
        "client": ("127.0.0.1", 50000),
        "server": ("testserver", 80),
    }


def parse_frames(data: bytes) -> list[dict[str, str]]:
    """Blocks of `field: value` lines, comments kept as {"comment": ...}."""
    frames = []
    for block in data.decode().split("\n\n"):
        if not block:
            continue
        frame: dict[str, str] = {}
        for line in block.split("\n"):
            name, _, value = line.partition(":")
            value = value[1:] if value.startswith(" ") else value
            key = name or "comment"
            frame[key] = frame[key] + "\n" + value if key in frame and key == "data" else value
        frames.append(frame)
    return frames


class Stream:
    """One stream through the whole ASGI application."""

    def __init__(
        self,
        application: Any,
        path: str,
        query: bytes = b"",
        headers: list[tuple[bytes, bytes]] | None = None,
        method: str = "GET",
        scope: dict[str, Any] | None = None,
    ) -> None:
        scope = scope or http_scope(path, query, headers, method)
        self.communicator = ApplicationCommunicator(application, scope)
        self.status: int | None = None
        self.headers: dict[bytes, bytes] = {}
        self.buffer = b""
        self.ended = False

    async def open(self, timeout: float = 5) -> Stream:
        await self.communicator.send_input({"type": "http.request", "body": b""})
        start = await self.communicator.receive_output(timeout)
        assert start["type"] == "http.response.start"
        self.status = start["status"]
        self.headers = {name.lower(): value for name, value in start["headers"]}
        return self

    async def read_chunk(self, timeout: float = 5) -> bytes:
        message = await self.communicator.receive_output(timeout)
        assert message["type"] == "http.response.body"
        if not message.get("more_body"):
            self.ended = True
        self.buffer += message["body"]
        return message["body"]

    async def body(self, timeout: float = 5) -> bytes:
        """The whole body of a response that ends (a rejection)."""
        while not self.ended:
            await self.read_chunk(timeout)
        return self.buffer

    async def frames_until(self, predicate: Any, timeout: float = 5) -> list[dict[str, str]]:
        """Read until the frames read so far satisfy `predicate`; returns them all."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            frames = parse_frames(self.buffer[: self.buffer.rfind(b"\n\n") + 2])
            if predicate(frames):
                return frames
            remaining = deadline - loop.time()
            if remaining <= 0 or self.ended:
                raise AssertionError(f"condition not met; frames so far: {frames}")
            await self.read_chunk(remaining)

    async def events(self, count: int, timeout: float = 5) -> list[dict[str, str]]:
        frames = await self.frames_until(lambda fs: len([f for f in fs if "data" in f]) >= count, timeout)
        return [f for f in frames if "data" in f]

    async def close(self) -> None:
        """What daphne does once the client is gone or the response is finished (the
        server ended it): http.disconnect. The application must then end."""
        await self.communicator.send_input({"type": "http.disconnect"})
        application = self.communicator.future
        try:
            await asyncio.wait_for(asyncio.shield(application), 5)
        except TimeoutError:
            application.cancel()
            await asyncio.wait({application}, timeout=5)
            raise AssertionError("the application did not end after http.disconnect") from None


async def open_stream(
    path: str,
    query: bytes = b"",
    headers: Headers | None = None,
    *,
    last_id: str | None = None,
) -> Stream:
    """A stream through the project's ASGI application, its status and headers read;
    `last_id` is sent as Last-Event-ID."""
    from site_config.asgi import application  # the project's: imported once Django is set up

    if last_id is not None:
        headers = [*(headers or []), (b"last-event-id", last_id.encode())]
    return await Stream(application, path, query, headers).open()


async def live(stream: Stream, timeout: float = 5) -> list[dict[str, str]]:
    """Read until the stream has caught up (its first id block is written); returns the
    frames read so far."""
    return await stream.frames_until(lambda frames: any("id" in f for f in frames), timeout)


async def open_live(
    path: str, query: bytes = b"", headers: list[tuple[bytes, bytes]] | None = None
) -> Stream:
    """A stream opened and caught up: what comes next is live."""
    stream = await open_stream(path, query, headers)
    assert stream.status == 200, stream.status
    await live(stream)
    return stream
