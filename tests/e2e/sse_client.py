"""A real SSE client for end-to-end tests: httpx + httpx-sse, collecting in a task."""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any

import httpx
from httpx_sse import aconnect_sse

from tests.servers import Daphne


class Subscriber:
    """Connects to a stream and collects its events until closed.

    `ready` is set once the server's first id block has arrived, i.e. the stream is
    subscribed and anything published from then on will be delivered.
    """

    def __init__(self, url: str, headers: dict[str, str] | None = None, **client: Any) -> None:
        self.url = url
        self.headers = headers or {}
        self.client_options = client
        self.events: list[Any] = []
        self.status: int | None = None
        self.last_id: str | None = None
        self.ready = asyncio.Event()
        self.ended = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Subscriber:
        self._task = asyncio.create_task(self._run())
        done, _ = await asyncio.wait(
            [asyncio.ensure_future(self.ready.wait()), asyncio.ensure_future(self.ended.wait())],
            timeout=10,
            return_when=asyncio.FIRST_COMPLETED,
        )
        if not self.ready.is_set():
            await self.aclose()
            raise AssertionError(f"stream {self.url} did not become ready (status {self.status})")
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _run(self) -> None:
        try:
            async with (
                httpx.AsyncClient(timeout=httpx.Timeout(30, connect=10), **self.client_options) as client,
                aconnect_sse(client, "GET", self.url, headers=self.headers) as source,
            ):
                self.status = source.response.status_code
                if self.status != 200:
                    return
                async for sse in source.aiter_sse():
                    if sse.id:
                        self.last_id = sse.id
                        self.ready.set()
                    if sse.event and sse.data:
                        self.events.append(sse)
        finally:
            self.ended.set()

    async def wait_for(self, count: int, timeout: float = 10) -> list[Any]:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while len(self.events) < count:
            if loop.time() > deadline:
                raise AssertionError(f"{len(self.events)} of {count} events arrived: {self.events}")
            if self.ended.is_set():
                raise AssertionError(f"stream ended after {len(self.events)} of {count} events")
            await asyncio.sleep(0.02)
        return self.events


async def close_all(subscribers: list[Subscriber], *servers: Daphne) -> None:
    """Close every subscriber, even those whose stream ended with an error (its server
    was killed: expected where this is used), then stop the servers."""
    try:
        for subscriber in subscribers:
            with contextlib.suppress(httpx.HTTPError):
                await subscriber.aclose()
    finally:
        for server in servers:
            server.stop()


class ResumingClient:
    """Behaves like EventSource: reconnects after any end or error, sending Last-Event-ID.

    Each (re)connection goes to the next of `urls`; with `drop_every`, the client also
    hangs up by itself after that many events, to force resumes.
    """

    def __init__(
        self, urls: list[str], path: str, drop_every: int | None = None, pause: float = 0.05
    ) -> None:
        self.urls = urls
        self.path = path
        self.drop_every = drop_every
        self.pause = pause
        self.events: list[Any] = []
        # time.time() at which each of `events` arrived (wall clock: comparable with a
        # timestamp another process put in the event).
        self.arrived: list[float] = []
        self.last_id: str | None = None
        self.connections = 0
        self.failures = 0
        self.resets = 0
        self._task: asyncio.Task[None] | None = None

    def start(self) -> ResumingClient:
        self._task = asyncio.create_task(self._run())
        return self

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run(self) -> None:
        async with httpx.AsyncClient(timeout=httpx.Timeout(10, connect=2)) as client:
            while True:
                url = self.urls[self.connections % len(self.urls)] + self.path
                self.connections += 1
                headers = {"Last-Event-ID": self.last_id} if self.last_id else {}
                received = 0
                try:
                    async with aconnect_sse(client, "GET", url, headers=headers) as source:
                        if source.response.status_code != 200:
                            self.failures += 1
                        else:
                            async for sse in source.aiter_sse():
                                if sse.id:
                                    self.last_id = sse.id
                                if sse.event and sse.data:
                                    if sse.event == "stream-reset":
                                        self.resets += 1
                                    self.events.append(sse)
                                    self.arrived.append(time.time())
                                    received += 1
                                    if self.drop_every and received >= self.drop_every:
                                        break
                except (httpx.HTTPError, OSError):
                    self.failures += 1
                await asyncio.sleep(self.pause)

    async def wait_for(self, predicate: Any, timeout: float) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while not predicate(self.events):
            if loop.time() > deadline:
                raise AssertionError(
                    f"condition not met after {timeout} s: {len(self.events)} events, "
                    f"{self.connections} connections, {self.failures} failures"
                )
            await asyncio.sleep(0.05)
