"""events/transport.py: the fallback for ASGI servers other than daphne, and the daphne
adapter against stand-ins with the Twisted attributes it reads (the e2e tests run it
under a real daphne; tests/test_daphne_connection.py runs request_read() with daphne's
and Twisted's own request and protocol classes)."""

from __future__ import annotations

import asyncio
import functools
import io
from types import SimpleNamespace

from twisted.web.http_headers import Headers

from events.transport import (
    ASGI_ONLY,
    SERVER_SEND_KEY,
    Disconnect,
    TwistedTransport,
    buffered_body,
    request_read,
    transport_for,
)


class Socket:
    def __init__(self, takes: int | None = None, error: type[OSError] | None = None) -> None:
        self.takes, self.error, self.sent = takes, error, b""

    def send(self, data: bytes) -> int:
        if self.error is not None:
            raise self.error()
        taken = data if self.takes is None else data[: self.takes]
        self.sent += taken
        return len(taken)


class TCP:
    """What TwistedTransport reads of twisted.internet.tcp.Connection."""

    def __init__(self, socket: Socket | None = None, tls: bool = False) -> None:
        self.socket = socket or Socket()
        self.TLS = tls
        self.connected, self.disconnecting = True, False
        self.dataBuffer, self.offset, self._tempDataLen = b"", 0, 0
        self.written: list[bytes] = []
        self.aborted = False

    def write(self, data: bytes) -> None:
        self.written.append(data)
        self._tempDataLen += len(data)

    def abortConnection(self) -> None:
        self.aborted = True


def daphne_send(tcp: TCP, chunked: bool = True, content=None):
    request = SimpleNamespace(
        channel=SimpleNamespace(transport=tcp),
        chunked=chunked,
        finished=False,
        _disconnected=False,
        sentLength=0,
        content=content,
    )

    def handle_reply(request, message):  # daphne's server.handle_reply, partially applied
        raise AssertionError("not called here")

    return functools.partial(handle_reply, request), request


async def test_other_servers_get_plain_asgi_with_no_bound() -> None:
    for scope in ({}, {SERVER_SEND_KEY: lambda message: None}):
        transport = transport_for(scope)
        assert transport is ASGI_ONLY
        transport.start_direct()
        assert transport.write(b"x") is False  # the caller sends it through ASGI
        assert (transport.queued(), transport.bounded, transport.abort()) == (0, False, False)
        await transport.drain(1)


def test_daphne_chunks_go_straight_to_the_socket_once_started() -> None:
    tcp = TCP()
    send, request = daphne_send(tcp)
    transport = transport_for({SERVER_SEND_KEY: send})
    assert isinstance(transport, TwistedTransport) and transport.bounded
    assert transport.write(b"hello") is False  # not before the first bytes are out
    transport.start_direct()
    assert transport.write(b"hello") is True
    assert tcp.socket.sent == b"5\r\nhello\r\n"
    assert request.sentLength == 5
    assert transport.queued() == 0


def test_what_the_kernel_does_not_take_is_queued_in_order() -> None:
    tcp = TCP(Socket(takes=4))
    send, _ = daphne_send(tcp)
    transport = TwistedTransport(tcp, send)
    transport.start_direct()
    assert transport.write(b"hello") is True
    assert tcp.written == [b"ello\r\n"]
    assert transport.queued() == 6
    # Bytes queued: the next chunk goes into Twisted's buffer behind them (not to the
    # socket, which would put it ahead of them).
    assert transport.write(b"more") is True
    assert tcp.written == [b"ello\r\n", b"4\r\nmore\r\n"]
    assert tcp.socket.sent == b"5\r\nh"
    assert transport.queued() == 6 + 9


def test_direct_writes_are_off_for_tls_unchunked_and_closing_connections() -> None:
    for tcp, chunked in ((TCP(tls=True), True), (TCP(), False)):
        transport = TwistedTransport(tcp, daphne_send(tcp, chunked)[0])
        transport.start_direct()
        assert transport.write(b"x") is False
    tcp = TCP()
    transport = TwistedTransport(tcp, daphne_send(tcp)[0])
    transport.start_direct()
    tcp.disconnecting = True
    assert transport.write(b"x") is False
    failing = TCP(Socket(error=ConnectionResetError))
    transport = TwistedTransport(failing, daphne_send(failing)[0])
    transport.start_direct()
    assert transport.write(b"x") is False


def test_queued_counts_twisteds_buffers_and_abort_drops_the_connection() -> None:
    tcp = TCP()
    tcp.dataBuffer, tcp.offset, tcp._tempDataLen = b"abcdef", 2, 3
    transport = TwistedTransport(tcp, daphne_send(tcp)[0])
    assert transport.queued() == 7
    assert transport.abort() is True and tcp.aborted


async def test_drain_waits_for_the_kernel_at_most_the_timeout() -> None:
    tcp = TCP()
    tcp._tempDataLen = 10
    transport = TwistedTransport(tcp, daphne_send(tcp)[0])
    await transport.drain(0.05)  # never taken: returns anyway
    assert transport.queued() == 10


def test_buffered_body() -> None:
    body = io.BytesIO(b"data")
    assert buffered_body(daphne_send(TCP(), content=body)[0]) is body
    body.close()
    assert buffered_body(daphne_send(TCP(), content=body)[0]) is None
    assert buffered_body(lambda message: None) is None


def test_an_empty_chunk_never_goes_to_the_socket() -> None:
    """`0\\r\\n\\r\\n` is the chunked encoding's end of the response: an empty write is
    left to the ASGI path (which sends nothing for an empty body chunk)."""
    tcp = TCP()
    send, _ = daphne_send(tcp)
    transport = transport_for({SERVER_SEND_KEY: send})
    transport.start_direct()
    assert transport.write(b"") is False
    assert tcp.socket.sent == b""


async def test_other_servers_keep_their_receive() -> None:
    async def receive() -> dict:
        return {"type": "http.disconnect"}

    for send in (lambda message: None, functools.partial(print, SimpleNamespace())):
        assert request_read(send, receive) is receive


def read_request(queue: asyncio.Queue, receive=None) -> SimpleNamespace:
    """request_read() on a stand-in for daphne's request, with daphne's `receive`."""
    tcp = TCP()
    send, request = daphne_send(tcp)
    request.application_queue = queue
    request.requestHeaders = Headers({b"Referer": [b"r"], b"Cookie": [b"c"], b"Host": [b"h"]})
    request.responseHeaders = Headers({b"Content-Type": [b"text/event-stream"]})
    request.clean_headers = [(b"host", b"h")]
    request.startedWriting = False
    returned = request_read(send, receive or queue.get)
    return SimpleNamespace(request=request, receive=returned, transport=TwistedTransport(tcp, send))


async def test_a_read_request_gets_its_disconnect_through_a_future_in_place_of_daphnes_queue() -> None:
    read = read_request(asyncio.Queue())
    disconnect = read.request.application_queue
    assert isinstance(disconnect, Disconnect) and read.receive is disconnect
    assert disconnect  # daphne tests it for truth before putting
    disconnect.put_nowait({"type": "http.disconnect"})
    disconnect.put_nowait({"type": "http.disconnect", "again": True})  # finished, then lost
    assert await read.receive() == {"type": "http.disconnect"}
    # Twisted's access log line reads the referer; daphne's copy went into the scope.
    assert dict(read.request.requestHeaders.getAllRawHeaders()) == {b"Referer": [b"r"]}
    assert read.request.clean_headers is None


async def test_a_disconnect_after_a_cancellation_is_dropped() -> None:
    disconnect = Disconnect()
    waiter = asyncio.ensure_future(disconnect)  # as a Task waits on it
    await asyncio.sleep(0)
    waiter.cancel()
    await asyncio.sleep(0)
    disconnect.put_nowait({"type": "http.disconnect"})  # no InvalidStateError into daphne
    assert disconnect.cancelled()


async def test_a_disconnect_already_queued_stays_in_daphnes_queue() -> None:
    queue: asyncio.Queue = asyncio.Queue()
    queue.put_nowait({"type": "http.disconnect"})
    read = read_request(queue)
    assert read.request.application_queue is queue and read.receive == queue.get
    assert await read.receive() == {"type": "http.disconnect"}


async def test_a_wrapped_receive_is_left_as_it_is() -> None:
    async def wrapped() -> dict:
        return {"type": "http.disconnect"}

    read = read_request(asyncio.Queue(), wrapped)
    assert read.receive is wrapped and isinstance(read.request.application_queue, asyncio.Queue)


async def test_the_response_headers_go_once_twisted_wrote_them() -> None:
    read = read_request(asyncio.Queue())
    read.transport.start_direct()
    assert read.request.responseHeaders.hasHeader(b"content-type")  # not written yet
    read.request.startedWriting = True
    read.transport.start_direct()
    assert list(read.request.responseHeaders.getAllRawHeaders()) == []
