"""Everything this product reads or does inside daphne and Twisted, past the ASGI
interface. Re-read this file on every daphne or Twisted upgrade: it relies on their
private attributes, checked by tests/test_transport.py and the e2e tests under daphne.

Under daphne the ASGI `send` never waits: http.response.body goes straight into
Twisted's transport buffer, which grows without bound while a client does not read.
That buffer is where a slow client's data queues, so that is what a stream measures
(queued()) and bounds (EVENTS_MAX_QUEUED_BYTES, events/consumers.py). The `send` daphne
hands the application is `functools.partial(server.handle_reply, request)`; the ASGI
wrapper (events/asgi.py) keeps it in the scope under SERVER_SEND_KEY.

Once a stream's request is read, the connection keeps only what the rest of its life
needs (request_read(), start_direct()): daphne's per-request asyncio.Queue gives way
to a Disconnect, and the request and response headers Twisted and daphne hold are
released (ARCHITECTURE.md, "Performance notes").

Under any other ASGI server, transport_for() answers an AsgiTransport: every chunk goes
through the ASGI send, nothing is measured, no bound applies here, nothing is aborted
(the response is ended instead), and request_read() changes nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
from collections.abc import Awaitable, Callable
from typing import IO, Any, cast

SERVER_SEND_KEY = "events.server_send"
# How often drain() looks whether the kernel has taken what is queued.
DRAIN_POLL_SECONDS = 0.01
# Request headers Twisted's access log line still reads when the response finishes.
LOGGED_HEADERS = (b"referer", b"user-agent", b"x-forwarded-for")

Receive = Callable[[], Awaitable[dict[str, Any]]]


class Disconnect(asyncio.Future[dict[str, Any]]):
    """Stands in for daphne's per-request asyncio.Queue once the request is read.

    After the request's body, daphne only ever puts {"type": "http.disconnect"} on that
    queue (when the connection is lost, or the response finished), once or twice, and
    tests it for truth first. A future holding the first such message does the same
    for a fraction of the queue's memory (four deques); calling it, as ASGI's
    `receive`, answers the future itself."""

    __slots__ = ()

    def put_nowait(self, message: dict[str, Any]) -> None:
        # The second disconnect (finished, then lost) or one after a cancellation: dropped.
        if not self.done():
            self.set_result(message)

    def __call__(self) -> Disconnect:
        return self


class AsgiTransport:
    """The fallback: plain ASGI, unbounded, and nothing to reach below it."""

    __slots__ = ()
    bounded = False

    def start_direct(self) -> None:
        pass

    def write(self, data: bytes) -> bool:
        """Write a body chunk below the ASGI send: False, the caller sends it."""
        return False

    def queued(self) -> int:
        return 0

    def abort(self) -> bool:
        """Drop the connection with what is queued: False, the caller ends the response."""
        return False

    async def drain(self, timeout: float) -> None:
        pass


class TwistedTransport:
    """A daphne connection: Twisted's TCP transport, and for a plain-TCP chunked
    response once its first bytes are out, daphne's request to write chunks straight to
    the socket (write())."""

    __slots__ = ("tcp", "_server_send", "_request")
    bounded = True

    def __init__(self, tcp: Any, server_send: Any) -> None:
        self.tcp = tcp
        self._server_send = server_send
        self._request: Any = None

    def start_direct(self) -> None:
        """Call once the response's first body bytes are out: from then on a chunk may
        go straight to the socket (not under TLS, nor for a response not chunked)."""
        request = self._server_send.args[0]
        if getattr(request, "startedWriting", False):
            # Twisted wrote the response headers with the first body bytes and reads
            # them no more.
            request.responseHeaders = type(request.responseHeaders)()
        if getattr(self.tcp, "socket", None) is None or getattr(self.tcp, "TLS", True):
            return
        self._request = request if getattr(request, "chunked", False) else None

    def write(self, data: bytes) -> bool:
        """The hot path of fan-out under daphne: one body chunk, straight to the socket.

        Through the ASGI send, each chunk passes daphne's reply checks and Twisted's
        Request.write, and Twisted then registers the socket with the event loop for
        writing and unregisters it once flushed, a loop iteration later: two epoll_ctl
        calls and a dozen Python frames per stream per event (ARCHITECTURE.md,
        "Performance notes"). When nothing is queued in Twisted for this connection, the same chunk
        (HTTP/1.1 chunked framing, as Twisted's toChunk writes it) is sent to the socket
        at once; whatever the kernel does not take goes to Twisted's buffer, so order is
        kept and queued() still sees it. When bytes are already queued, the chunk goes
        into Twisted's buffer behind them (Twisted joins its buffer into one send once
        the socket is writable), rather than through daphne's reply path. Anything
        unusual (a response finished, a connection closing or closed) answers False,
        and the chunk takes the ordinary ASGI path.
        """
        request, tcp = self._request, self.tcp
        if (
            not data  # an empty chunk is the chunked encoding's end of the response
            or request is None
            or request.finished
            or request._disconnected
            or not tcp.connected
            or tcp.disconnecting
        ):
            return False
        chunk = b"%x\r\n%b\r\n" % (len(data), data)
        sent = 0
        if not tcp._tempDataLen and len(tcp.dataBuffer) <= tcp.offset:
            try:
                sent = tcp.socket.send(chunk)
            except (BlockingIOError, InterruptedError):
                pass
            except OSError:
                return False  # the connection is failing: let Twisted find out and report it
        request.sentLength += len(data)
        if sent < len(chunk):
            tcp.write(chunk[sent:] if sent else chunk)
        return True

    def queued(self) -> int:
        """Bytes written to the connection and not yet taken by the kernel."""
        tcp = self.tcp
        try:
            return int(len(tcp.dataBuffer) - tcp.offset + tcp._tempDataLen)
        except (AttributeError, TypeError):
            return 0

    def abort(self) -> bool:
        self.tcp.abortConnection()
        return True

    async def drain(self, timeout: float) -> None:
        """Wait until Twisted has handed everything written to the kernel, at most
        `timeout` seconds (daphne drops connections right after shutdown)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while self.queued() > 0 and loop.time() < deadline:
            await asyncio.sleep(DRAIN_POLL_SECONDS)


Transport = AsgiTransport | TwistedTransport
ASGI_ONLY = AsgiTransport()


def _daphne_request(server_send: Any) -> Any:
    if not isinstance(server_send, functools.partial) or not server_send.args:
        return None
    return server_send.args[0]


def transport_for(scope: dict[str, Any]) -> Transport:
    """The connection of a stream's request, as far as this server lets us reach it."""
    server_send = scope.get(SERVER_SEND_KEY)
    request = _daphne_request(server_send)
    tcp = getattr(getattr(request, "channel", None), "transport", None)
    if tcp is None or not hasattr(tcp, "dataBuffer"):
        return ASGI_ONLY
    return TwistedTransport(tcp, server_send)


def request_read(send: Any, receive: Receive) -> Receive:
    """Call once the request, head and body, is read, with the server's `send` and
    `receive`: the connection lets go of what it no longer needs, and the answer is the
    `receive` to wait on from now on, for the end of the connection alone.

    Under daphne, as long as nothing else is queued (a client gone already), that is a
    Disconnect put in place of daphne's queue; the caller must then drop the `receive`
    it had, whose bound method keeps that queue alive. Twisted keeps of the request
    headers those its access log line reads at finish(), daphne none (it reads its copy,
    the scope's list, only to build the scope). Elsewhere `receive` itself."""
    request = _daphne_request(send)
    queue = getattr(request, "application_queue", None)
    if not isinstance(queue, asyncio.Queue):
        return receive
    nothing_queued = queue.empty()
    if getattr(receive, "__self__", None) is not queue:
        return receive  # wrapped: the wrapper would keep the queue anyway
    if nothing_queued:
        receive = request.application_queue = Disconnect()
    headers = request.requestHeaders
    kept = type(headers)()
    for name in LOGGED_HEADERS:
        values = headers.getRawHeaders(name)
        if values is not None:
            kept.setRawHeaders(name, values)
    request.requestHeaders = kept
    request.clean_headers = None
    # Its attributes are about to outgrow the instance dict CPython shares between the
    # instances of a class, which then becomes a table sized for three times as many:
    # a dict sized for them now, with room for those to come, takes half the memory.
    with contextlib.suppress(AttributeError, TypeError):  # not a plain class instance
        request.__dict__ = dict(request.__dict__)
    return receive


def buffered_body(send: Any) -> IO[bytes] | None:
    """daphne's copy of the request body (a file), or None under other servers.

    daphne starts the application only once Twisted has received the whole body: into
    memory up to a threshold, into a temporary file beyond. Right after calling the
    application it copies that body into the application's queue in small chunks, all
    at once, so a large body became as much process memory, kept by the allocator."""
    request = _daphne_request(send)
    content = getattr(request, "content", None)
    if content is not None and hasattr(content, "seek") and not getattr(content, "closed", True):
        return cast("IO[bytes]", content)
    return None
