"""One client must not take a process down by opening streams (real daphne, a low
descriptor limit as a service manager sets it): past its share it is answered 429,
past what the process's descriptors allow everyone is answered 503 with Retry-After,
and /healthz still answers."""

from __future__ import annotations

import asyncio
import json
import uuid

import httpx
import pytest

from events.fdlimit import stream_capacity
from tests.servers import Daphne

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

NOFILE = 256


class RawStream:
    """A stream as a bare socket: the status line and headers, and the socket kept open."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        self.status = 0
        self.headers: dict[str, str] = {}
        self.body = b""

    @classmethod
    async def open(cls, port: int, path: str) -> RawStream:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        stream = cls(reader, writer)
        writer.write(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode())
        await writer.drain()
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 20)
        lines = head.decode("latin-1").split("\r\n")
        stream.status = int(lines[0].split()[1])
        stream.headers = {
            name.lower(): value for name, _, value in (line.partition(": ") for line in lines[1:] if line)
        }
        if stream.status != 200:
            stream.body = await asyncio.wait_for(stream._read_body(), 20)
        return stream

    async def _read_body(self) -> bytes:
        if "content-length" in self.headers:
            return await self.reader.readexactly(int(self.headers["content-length"]))
        body = b""
        while size := int((await self.reader.readuntil(b"\r\n")).strip(), 16):
            body += await self.reader.readexactly(size)
            await self.reader.readuntil(b"\r\n")
        return body

    def close(self) -> None:
        self.writer.close()


async def open_many(port: int, path: str, count: int) -> list[RawStream]:
    streams: list[RawStream] = []
    for start in range(0, count, 16):  # a few at a time, as a script would
        streams += await asyncio.gather(*(RawStream.open(port, path) for _ in range(min(16, count - start))))
    return streams


def refused(streams: list[RawStream], status: int) -> list[RawStream]:
    out = [s for s in streams if s.status == status]
    for stream in out:
        assert stream.headers.get("retry-after", "").isdigit(), stream.headers
        assert json.loads(stream.body)["error"]
        stream.close()  # as a client that gives up would
    return out


async def test_one_client_cannot_exhaust_the_descriptors(server_env) -> None:
    # Opened all at once from one address: the limit on set-ups in flight is not measured here.
    env = {**server_env, "EVENTS_MAX_STREAMS_PER_CLIENT": "0", "EVENTS_MAX_PENDING_SETUPS_PER_CLIENT": "0"}
    server = Daphne(env, nofile=NOFILE).start()
    capacity = stream_capacity(NOFILE)
    assert capacity is not None and capacity < NOFILE - 32
    streams: list[RawStream] = []
    try:
        path = f"/events/limits-{uuid.uuid4().hex[:8]}/"
        streams = await open_many(server.port, path, capacity + 40)
        ok = [s for s in streams if s.status == 200]
        assert len(ok) == capacity, {s.status for s in streams}
        assert len(refused(streams, 503)) == 40
        # The process still serves: its health check, and a page.
        async with httpx.AsyncClient(timeout=10) as client:
            health = await client.get(f"{server.url}/healthz")
            assert health.status_code == 200, health.text
        # A stream that ends gives its place back.
        ok[0].close()
        await asyncio.sleep(0.5)
        again = await RawStream.open(server.port, path)
        assert again.status == 200
        streams.append(again)
        assert "Too many open files" not in server.output()
    finally:
        for stream in streams:
            stream.close()
        server.stop()


async def test_one_client_gets_its_share_by_default(server_env) -> None:
    from events.conf import DEFAULTS

    share = DEFAULTS["EVENTS_MAX_STREAMS_PER_CLIENT"]
    env = {key: value for key, value in server_env.items() if key != "EVENTS_MAX_STREAMS_PER_CLIENT"}
    env["EVENTS_MAX_PENDING_SETUPS_PER_CLIENT"] = "0"
    server = Daphne(env, nofile=NOFILE).start()
    streams: list[RawStream] = []
    try:
        streams = await open_many(server.port, f"/events/limits-{uuid.uuid4().hex[:8]}/", share + 5)
        assert len([s for s in streams if s.status == 200]) == share
        assert len(refused(streams, 429)) == 5
    finally:
        for stream in streams:
            stream.close()
        server.stop()
