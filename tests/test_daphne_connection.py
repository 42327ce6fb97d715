"""A stream over daphne's own HTTP protocol, in this process: daphne's Server (its
create_application and handle_reply), its WebRequest and Twisted's HTTPChannel, on a
Twisted test transport, with the project's application and real Redis. What it pins:
once a stream is set up, nothing of ours keeps daphne's per-request queue, and the
stream still learns of every way its connection ends (events/transport.py
request_read())."""

from __future__ import annotations

import asyncio
import gc
import weakref
from typing import Any

import pytest
from asgiref.sync import sync_to_async
from daphne.http_protocol import HTTPFactory
from daphne.server import Server
from django.contrib.auth import get_user_model
from twisted.internet.address import IPv4Address
from twisted.internet.error import ConnectionDone
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure

from events.hub import get_hub
from events.transport import Disconnect, TwistedTransport
from tests.streams import channel
from tests.test_reauth import logged_in

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("hub_cleanup")]


class TCP(StringTransport):
    """Twisted's test transport with the buffer attributes events/transport.py reads of
    a TCP connection (nothing ever queued), and no socket: chunks take daphne's path."""

    dataBuffer, offset, _tempDataLen = b"", 0, 0

    def abortConnection(self) -> None:
        self.loseConnection()


class Connection:
    """One client connection to an in-process daphne, with one request on it."""

    def __init__(self, path: str, headers: bytes = b"") -> None:
        from site_config.asgi import application

        # Never run: its endpoint only satisfies the constructor.
        self.server = Server(application, endpoints=["tcp:port=0"], signal_handlers=False)
        self.server.connections = {}
        self.tcp = TCP(peerAddress=IPv4Address("TCP", "127.0.0.1", 50000))
        self.protocol = HTTPFactory(self.server).buildProtocol(self.tcp.getPeer())
        self.protocol.makeConnection(self.tcp)
        self.protocol.dataReceived(
            b"GET %s HTTP/1.1\r\nHost: testserver\r\n%s\r\n" % (path.encode(), headers)
        )
        [(self.request, details)] = self.server.connections.items()
        self.task: asyncio.Future[None] = details["application_instance"]

    async def until_written(self, marker: bytes, timeout: float = 5) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while marker not in self.tcp.value():
            assert loop.time() < deadline and not self.task.done(), self.tcp.value()
            await asyncio.sleep(0.01)

    def lose(self) -> None:
        """The client goes away."""
        self.protocol.connectionLost(Failure(ConnectionDone()))

    async def ended(self, timeout: float = 5) -> None:
        await asyncio.wait_for(asyncio.shield(self.task), timeout)


async def until_live(connection: Connection, timeout: float = 5) -> Any:
    """The connection's stream, once live (the consumer then waits for its end)."""
    await connection.until_written(b":ok\n\n", timeout)
    hub = get_hub()
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not hub.streams or next(iter(hub.streams)).phase.value != "live":
        assert loop.time() < deadline, "the stream did not go live"
        await asyncio.sleep(0.01)
    await asyncio.sleep(0.05)  # the consumer is back in its loop
    return next(iter(hub.streams))


async def live_stream(path: str, headers: bytes = b"") -> tuple[Connection, Any]:
    connection = Connection(path, headers)
    return connection, await until_live(connection)


async def test_an_open_stream_keeps_no_reference_to_daphnes_queue() -> None:
    connection = Connection(f"/events/{channel()}/")
    queue = weakref.ref(connection.request.application_queue)
    assert isinstance(queue(), asyncio.Queue)
    await until_live(connection)
    gc.collect()
    assert queue() is None
    assert isinstance(connection.request.application_queue, Disconnect)
    connection.lose()
    await connection.ended()


async def test_a_client_that_goes_away_is_noticed_and_leaves_the_hub() -> None:
    name = channel()
    connection, stream = await live_stream(f"/events/{name}/")
    hub = get_hub()
    assert stream in hub.channels[name].subscribers
    connection.lose()
    await connection.ended()
    assert stream.end_reason == "client_gone"
    assert not hub.streams and name not in hub.channels


async def test_a_stream_the_server_ends_ends_once_and_its_connection_then_goes() -> None:
    connection, stream = await live_stream(f"/events/{channel()}/")
    await stream.close_stream(reason="token_expired")
    await connection.ended()
    assert connection.tcp.value().endswith(b"0\r\n\r\n")  # the chunked response's end
    assert stream.end_reason == "token_expired"
    # daphne puts a second http.disconnect when the connection then goes: dropped.
    connection.lose()
    assert connection.request.application_queue.result() == {"type": "http.disconnect"}


async def test_a_client_gone_before_the_stream_is_set_up_is_noticed() -> None:
    """The disconnect is queued before the consumer first runs: it stays in daphne's
    queue, which the consumer then keeps reading."""
    name = channel()
    connection = Connection(f"/events/{name}/")
    connection.lose()
    await connection.ended()
    assert isinstance(connection.request.application_queue, asyncio.Queue)
    hub = get_hub()
    assert not hub.streams and name not in hub.channels


async def test_a_client_gone_while_its_stream_is_set_up_is_noticed_once_it_is() -> None:
    name = channel()
    connection = Connection(f"/events/{name}/")
    while not isinstance(connection.request.application_queue, Disconnect):
        await asyncio.sleep(0)  # the consumer's first step: the request is read
    connection.lose()
    await connection.ended()
    hub = get_hub()
    assert not hub.streams and name not in hub.channels


async def test_shutdown_cancels_an_open_stream_which_says_when_to_come_back() -> None:
    connection, stream = await live_stream(f"/events/{channel()}/")
    connection.task.cancel()  # what daphne does to every application at shutdown
    with pytest.raises(asyncio.CancelledError):
        await connection.task
    assert stream.end_reason == "shutdown"
    assert b"retry: " in connection.tcp.value().rsplit(b":ok\n\n", 1)[1]
    assert not get_hub().streams
    connection.lose()  # daphne's disconnect after the cancellation: dropped


async def test_an_open_stream_keeps_no_scope_nor_headers_but_those_of_the_access_log() -> None:
    path = f"/events/{channel()}/"
    connection, stream = await live_stream(
        path, b"User-Agent: test-agent\r\nCookie: a=b\r\nReferer: http://x/\r\n"
    )
    request = connection.request
    gc.collect()
    assert not [o for o in gc.get_objects() if isinstance(o, dict) and o.get("path") == path]
    assert dict(request.requestHeaders.getAllRawHeaders()) == {
        b"Referer": [b"http://x/"],
        b"User-Agent": [b"test-agent"],
    }
    assert list(request.responseHeaders.getAllRawHeaders()) == []
    assert request.clean_headers is None
    assert stream.scope is None  # no access watch: nothing reads it any more
    assert isinstance(stream.transport, TwistedTransport)
    connection.lose()
    await connection.ended()


async def test_a_token_stream_keeps_no_scope_and_still_ends_when_the_token_does() -> None:
    """Its watch only waits for the token's expiry: it never reads the scope."""
    from events.tokens import make_token

    name = channel()
    token = make_token([name], ttl=3)
    connection, stream = await live_stream(f"/events/{name}/?token={token}")
    assert stream.scope is None
    await connection.ended()
    assert stream.end_reason == "token_expired"
    assert b"event: token-expired" in connection.tcp.value()


async def test_a_stream_whose_access_is_watched_keeps_its_scope_for_the_checks(settings) -> None:
    """The read policy is asked again with the session cookie of the scope."""
    settings.EVENTS_REAUTH_SECONDS = 0.3
    _, cookie, user = await logged_in(is_staff=True)
    connection, stream = await live_stream("/events/private-ops/", b"Cookie: %s\r\n" % cookie)
    assert stream.scope is not None
    await sync_to_async(get_user_model().objects.filter(pk=user.pk).update)(is_staff=False)
    await connection.ended()
    assert stream.end_reason == "access_revoked"
    assert b"event: access-revoked" in connection.tcp.value()
