"""A real SSE client for end-to-end tests: httpx + httpx-sse, collecting in a task."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import httpx
from httpx_sse import aconnect_sse


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
            async with httpx.AsyncClient(timeout=httpx.Timeout(30, connect=10), **self.client_options) as client:
                async with aconnect_sse(client, "GET", self.url, headers=self.headers) as source:
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
