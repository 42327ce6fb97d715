"""Open, then publish: an event committed after the client received the response head
reaches that stream, exactly once and in order (README "The stream").

A page that starts work in EventSource's `onopen` (a POST that publishes progress)
relies on it. The race is run as it happens: the stream's first bytes arrive, and at
that instant a POST goes out over an HTTP connection that is already open, to the
stream's own daphne process or to another one, while the CPU is kept busy. Rounds vary
the channel (new to the process, or already joined by another stream there) and the
stream (one channel, or two).
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import uuid

import pytest

from events.testing import SSEEvent, parse_sse
from tests.servers import Daphne

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

ROUNDS = 128
TOKEN = "e2e-publish-token"


class Connection:
    """One HTTP/1.1 connection kept open, so a request goes out the instant it is asked for."""

    def __init__(self, port: int) -> None:
        self.port = port

    async def open(self) -> Connection:
        self.reader, self.writer = await asyncio.open_connection("127.0.0.1", self.port)
        return self

    async def post(self, channel: str, data: object) -> tuple[int, dict[str, object]]:
        body = json.dumps({"data": data}).encode()
        self.writer.write(
            f"POST /events/{channel}/ HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            f"Authorization: Bearer {TOKEN}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n".encode()
            + body
        )
        head = await self.reader.readuntil(b"\r\n\r\n")
        status = int(head.split(b" ", 2)[1])
        length = next(
            int(line.split(b":", 1)[1])
            for line in head.split(b"\r\n")
            if line.lower().startswith(b"content-length:")
        )
        return status, json.loads(await self.reader.readexactly(length))

    def close(self) -> None:
        self.writer.close()


class RawStream:
    """A stream read chunk by chunk straight off the socket, so that `:ok` is seen as
    soon as it arrives (no client library buffering in between)."""

    def __init__(self, port: int, path: str) -> None:
        self.port = port
        self.path = path
        self.body = b""

    async def open(self) -> RawStream:
        self.reader, self.writer = await asyncio.open_connection("127.0.0.1", self.port)
        self.writer.write(f"GET {self.path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode())
        head = await self.reader.readuntil(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200"), head
        return self

    async def read_until(self, marker: bytes, timeout: float = 10) -> None:
        async def read() -> None:
            while marker not in self.body:
                size = int((await self.reader.readuntil(b"\r\n")).strip(), 16)
                assert size, f"the stream ended: {self.body!r}"
                self.body += (await self.reader.readexactly(size + 2))[:-2]

        await asyncio.wait_for(read(), timeout)

    def events(self) -> list[SSEEvent]:
        return parse_sse(self.body)

    def close(self) -> None:
        self.writer.close()


async def one_round(
    stream_at: Daphne, publish_to: Connection, joined: bool, several: bool
) -> tuple[int, str | None]:
    """Open a stream, publish at the instant its first bytes arrive, then publish a
    second event; returns how many times the first arrived before the second, and any
    other fault (wrong order, wrong ids)."""
    tag = uuid.uuid4().hex[:10]
    first, other = f"otp-{tag}", f"otp-{tag}-b"
    path = f"/events/?channel={other}&channel={first}" if several else f"/events/{first}/"
    holder = None
    if joined:
        # Another stream of the process already has the channel: the hub has joined it.
        holder = await RawStream(stream_at.port, f"/events/{first}/").open()
        await holder.read_until(f"id: {first}:".encode())
    stream = await RawStream(stream_at.port, path).open()
    try:
        await stream.read_until(b":ok\n\n")
        status, answer = await publish_to.post(first, {"round": tag, "n": 1})
        assert status == 201, answer
        status, answer = await publish_to.post(first, {"round": tag, "n": 2})
        assert status == 201, answer
        try:
            await stream.read_until(b'"n":2')
        except TimeoutError:
            return stream.body.count(b'"n":1'), f"the second event did not arrive: {stream.body!r}"
    finally:
        stream.close()
        if holder is not None:
            holder.close()
    events = stream.events()
    ns = [event.json()["n"] for event in events]
    fault = None
    if ns.count(2) != 1 or ns[-1] != 2:
        fault = f"second event: {ns}"
    elif ns.count(1) == 1 and ns != [1, 2]:
        fault = f"out of order: {ns}"
    else:
        ids = [event.id for event in events]
        expected = [f"{other}:0,{first}:{n}" if several else f"{first}:{n}" for n in ns]
        if ids != expected:
            fault = f"ids {ids}, expected {expected}"
    return ns.count(1), fault


async def test_event_published_when_the_stream_opens_is_delivered_once(server_env) -> None:
    here, there = Daphne(server_env).start(), Daphne(server_env).start()
    # The CPU kept busy: a process that spins until the test ends it.
    busy = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    connections = {}
    lost: list[str] = []
    faults: list[str] = []
    try:
        connections = {
            "same": await Connection(here.port).open(),
            "other": await Connection(there.port).open(),
        }
        for n in range(ROUNDS):
            publisher = ("same", "other")[n % 2]
            joined, several = bool(n // 2 % 2), bool(n // 4 % 2)
            label = f"round {n}: publisher {publisher}, joined={joined}, several={several}"
            count, fault = await one_round(here, connections[publisher], joined, several)
            if count == 0:
                lost.append(label)
            elif count > 1:
                faults.append(f"{label}: delivered {count} times")
            if fault:
                faults.append(f"{label}: {fault}")
    finally:
        for connection in connections.values():
            connection.close()
        busy.kill()
        busy.wait()
        here.stop()
        there.stop()
    print(f"open-then-publish: {len(lost)} lost of {ROUNDS} rounds")
    assert not faults, faults
    assert not lost, f"{len(lost)} of {ROUNDS} lost: {lost}"
