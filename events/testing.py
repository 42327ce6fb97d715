"""Helpers for testing code that sends events, and for reading streams in tests.

Capture what was sent, like Django's `mail.outbox`:

    from events.testing import capture_events

    with capture_events() as sent:
        client.post("/orders/42/pay/")
    assert [(e.channel, e.type, e.payload) for e in sent] == [("orders", "order-paid", {"id": 42})]

or with the pytest fixture (add `pytest_plugins = ["events.testing"]` to your conftest.py):

    def test_pay(client, sent_events):
        client.post("/orders/42/pay/")
        assert sent_events.filter(channel="orders")[0].payload == {"id": 42}

Read a stream and get events, not bytes:

    parse_sse(b"id: orders:1\\nevent: paid\\ndata: {}\\n\\n")   # [SSEEvent(...)]
    with connect(f"{server_url}/events/orders/") as stream:     # a running server
        stream.next_event(timeout=5)
    async with asgi_stream("/events/orders/") as stream:         # in process, no server
        await stream.next_event(timeout=5)
"""

from __future__ import annotations

import asyncio
import codecs
import contextlib
import http.client
import json
import queue
import re
import socket
import threading
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from events.signals import event_stored

if TYPE_CHECKING:
    from events.models import Event

__all__ = [
    "EventOutbox",
    "SSEEvent",
    "SSEParser",
    "asgi_stream",
    "capture_events",
    "connect",
    "parse_sse",
    "sent_events",
]


# -- capturing sent events -----------------------------------------------------------


class EventOutbox(list["Event"]):
    """The events sent while capturing, oldest first (stored `events.models.Event`s)."""

    def filter(self, channel: str | None = None, type: str | None = None) -> list[Event]:
        return [
            event
            for event in self
            if (channel is None or event.channel == channel) and (type is None or event.type == type)
        ]


@contextmanager
def capture_events() -> Iterator[EventOutbox]:
    """Collect every event sent (send_event, asend_event, admin, signals) in the block.

    An event is captured when it is stored, so also inside a test's transaction, where
    the broadcast (on commit) never happens. Captures may be nested.
    """
    outbox = EventOutbox()

    def stored(sender: Any, events: list[Event], **kwargs: Any) -> None:
        outbox.extend(events)

    # weak=False: `stored` lives only as long as this block, which disconnects it.
    event_stored.connect(stored, weak=False)
    try:
        yield outbox
    finally:
        event_stored.disconnect(stored)


try:
    import pytest
except ImportError:  # events.testing works without pytest; only the fixture needs it
    pytest = None  # type: ignore[assignment]

if pytest is not None:

    @pytest.fixture
    def sent_events() -> Iterator[EventOutbox]:
        """The events sent during the test (see capture_events)."""
        with capture_events() as outbox:
            yield outbox


# -- parsing the wire format ---------------------------------------------------------


@dataclass(frozen=True)
class SSEEvent:
    """One dispatched event, as a browser's EventSource would see it."""

    type: str  # the `event:` field, "message" when absent
    data: str  # the `data:` lines joined with "\n"
    id: str  # the last event id at dispatch (what Last-Event-ID would send)

    def json(self) -> Any:
        return json.loads(self.data)


_LINE_BREAK = re.compile(r"\r\n|\r|\n")


class SSEParser:
    """An incremental parser following the HTML standard's event-stream rules.

    Feed it bytes in chunks of any size (a line break or a UTF-8 character may be
    split between two); it returns the events completed so far. Comments are counted,
    `retry:` is kept, and an id without data moves `last_event_id` without an event.
    """

    def __init__(self) -> None:
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._buffer = ""
        self._skip_lf = False
        self._started = False
        self._data: list[str] = []
        self._type = ""
        self.last_event_id = ""
        self.retry: int | None = None
        self.comments = 0

    def feed(self, chunk: bytes | str) -> list[SSEEvent]:
        text = self._decoder.decode(chunk) if isinstance(chunk, bytes) else chunk
        if not text:
            return []
        if not self._started:
            self._started = True
            text = text.removeprefix("\ufeff")  # one BOM at the start is ignored
        if self._skip_lf and text.startswith("\n"):
            text = text[1:]  # the LF of a CRLF split between two chunks
        self._skip_lf = text.endswith("\r")
        lines = _LINE_BREAK.split(self._buffer + text)
        self._buffer = lines.pop()
        events = []
        for line in lines:
            event = self._line(line)
            if event is not None:
                events.append(event)
        return events

    def _line(self, line: str) -> SSEEvent | None:
        if not line:
            return self._dispatch()
        if line.startswith(":"):
            self.comments += 1
            return None
        name, colon, value = line.partition(":")
        if colon and value.startswith(" "):
            value = value[1:]
        if name == "event":
            self._type = value
        elif name == "data":
            self._data.append(value)
        elif name == "id":
            if "\0" not in value:
                self.last_event_id = value
        elif name == "retry" and value.isascii() and value.isdigit():
            self.retry = int(value)
        return None  # unknown fields are ignored

    def _dispatch(self) -> SSEEvent | None:
        data, event_type = self._data, self._type
        self._data, self._type = [], ""
        if not data:
            return None
        return SSEEvent(type=event_type or "message", data="\n".join(data), id=self.last_event_id)


def parse_sse(data: bytes | str) -> list[SSEEvent]:
    """The complete events in `data` (an unfinished last event is left out)."""
    return SSEParser().feed(data)


# -- a stream from a running server (sync) -------------------------------------------


class SyncStream:
    """A stream read by a background thread; see connect()."""

    def __init__(self, url: str, headers: dict[str, str], timeout: float) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https"):
            raise ValueError(f"not an http(s) URL: {url!r}")
        factory = http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
        self.connection = factory(parts.hostname or "", parts.port, timeout=timeout)
        self.path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        self.request_headers = {"Accept": "text/event-stream", "Cache-Control": "no-cache", **headers}
        self.parser = SSEParser()
        self.status: int | None = None
        self.headers: dict[str, str] = {}
        self.body = b""  # the body of a response that is not a stream (an error)
        self.ready = threading.Event()  # set once the first id has arrived
        self.ended = False
        self._queue: queue.Queue[SSEEvent | None] = queue.Queue()  # None: the stream ended
        self._thread: threading.Thread | None = None

    def open(self) -> None:
        self.connection.request("GET", self.path, headers=self.request_headers)
        response = self.connection.getresponse()
        self.status = response.status
        self.headers = {name.lower(): value for name, value in response.getheaders()}
        if self.status != 200 or not self.headers.get("content-type", "").startswith("text/event-stream"):
            self.body = response.read()
            self.ended = True
            return
        self._thread = threading.Thread(target=self._read, args=(response,), daemon=True)
        self._thread.start()

    def _read(self, response: http.client.HTTPResponse) -> None:
        try:
            while chunk := response.read1(65536):
                for event in self.parser.feed(chunk):
                    self._queue.put(event)
                if self.parser.last_event_id:
                    self.ready.set()
        except (OSError, http.client.HTTPException, ValueError):
            pass  # closed by close(), or the server went away: the stream has ended
        finally:
            self._queue.put(None)
            self.ready.set()  # nobody waits for a stream that ended

    def next_event(self, timeout: float = 5.0) -> SSEEvent:
        """The next event; TimeoutError if none arrives in time, EOFError if it ended."""
        if self.ended:
            raise EOFError("the stream ended")
        try:
            item = self._queue.get(timeout=max(0.0, timeout))
        except queue.Empty:
            raise TimeoutError(f"no event within {timeout} s") from None
        if item is None:
            self.ended = True
            raise EOFError("the stream ended")
        return item

    def events(self, count: int, timeout: float = 5.0) -> list[SSEEvent]:
        """The next `count` events, waiting at most `timeout` in all."""
        deadline = time.monotonic() + timeout
        return [self.next_event(deadline - time.monotonic()) for _ in range(count)]

    @property
    def last_event_id(self) -> str:
        return self.parser.last_event_id

    def close(self) -> None:
        sock = self.connection.sock
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)  # wakes the reading thread
        # Closing only once the thread is done: the response is not thread-safe.
        if self._thread is not None:
            self._thread.join(timeout=5)
        self.connection.close()


@contextmanager
def connect(
    url: str,
    *,
    headers: dict[str, str] | None = None,
    last_event_id: str | None = None,
    timeout: float = 10.0,
    wait_ready: bool = True,
) -> Iterator[SyncStream]:
    """Open an SSE stream on a running server (daphne, a live server) and read it.

    With `wait_ready`, returns once the server has sent the stream's first id, i.e.
    once it is subscribed: whatever is sent from then on arrives. A response that is
    not a stream (a 400 or 403) is returned too: check `stream.status`, `stream.body`.
    """
    all_headers = dict(headers or {})
    if last_event_id is not None:
        all_headers["Last-Event-ID"] = last_event_id
    stream = SyncStream(url, all_headers, timeout)
    try:
        stream.open()
        # The server sends the stream's position (an id) once it is subscribed.
        if wait_ready and stream.status == 200 and not stream.ready.wait(timeout):
            raise TimeoutError(f"{url}: no id within {timeout} s")
        yield stream
    finally:
        stream.close()


# -- a stream through the ASGI application, in process (async) ----------------------


class AsgiStream:
    """A stream through the project's ASGI application; see asgi_stream()."""

    def __init__(self, communicator: Any) -> None:
        self.communicator = communicator
        self.parser = SSEParser()
        self.status: int | None = None
        self.headers: dict[str, str] = {}
        self.body = b""
        self.ended = False
        self._events: list[SSEEvent] = []

    async def _read(self, timeout: float) -> None:
        message = await self.communicator.receive_output(timeout)
        if message["type"] == "http.response.start":
            self.status = message["status"]
            self.headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in message["headers"]}
            return
        chunk = message.get("body", b"")
        if self.status != 200:
            self.body += chunk
        else:
            self._events.extend(self.parser.feed(chunk))
        if not message.get("more_body"):
            self.ended = True

    async def next_event(self, timeout: float = 5.0) -> SSEEvent:
        """The next event; TimeoutError if none arrives in time (the stream is then ended)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while not self._events:
            if self.ended:
                raise EOFError("the stream ended")
            await self._read(max(0.001, deadline - loop.time()))
        return self._events.pop(0)

    async def events(self, count: int, timeout: float = 5.0) -> list[SSEEvent]:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        return [await self.next_event(max(0.001, deadline - loop.time())) for _ in range(count)]

    @property
    def last_event_id(self) -> str:
        return self.parser.last_event_id


@asynccontextmanager
async def asgi_stream(
    path: str,
    *,
    query: str = "",
    headers: dict[str, str] | None = None,
    last_event_id: str | None = None,
    application: Any = None,
    timeout: float = 10.0,
) -> AsyncIterator[AsgiStream]:
    """Open a stream in process, through `application` (default: ASGI_APPLICATION).

    No server is needed, but the channel layer is real: run it against your Redis.
    Returns once the stream is subscribed (its first id has arrived), or with the
    rejection in `status` and `body`. When the last stream of the event loop closes,
    the loop's hub is stopped too, so no task outlives the test.
    """
    from channels.testing import ApplicationCommunicator
    from django.conf import settings
    from django.utils.module_loading import import_string

    from events.hub import close_hub, running_hub

    app = application or import_string(settings.ASGI_APPLICATION)
    raw_headers = [(b"host", b"testserver")]
    for name, value in (headers or {}).items():
        raw_headers.append((name.lower().encode("latin-1"), value.encode("latin-1")))
    if last_event_id is not None:
        raw_headers.append((b"last-event-id", last_event_id.encode("latin-1")))
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": query.encode(),
        "headers": raw_headers,
        "client": ("127.0.0.1", 50000),
        "server": ("testserver", 80),
    }
    communicator = ApplicationCommunicator(app, scope)
    stream = AsgiStream(communicator)
    await communicator.send_input({"type": "http.request", "body": b""})
    try:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while not stream.ended and not (stream.status == 200 and stream.parser.last_event_id):
            await stream._read(max(0.001, deadline - loop.time()))
        yield stream
    finally:
        if not communicator.future.done():
            await communicator.send_input({"type": "http.disconnect"})
            await communicator.wait(timeout)
        hub = running_hub()
        if hub is not None and not hub.streams:
            await close_hub()
