"""The SSE stream: one consumer per open connection (README "The stream").

The consumer orchestrates; each concern lives beside it:
- events/stream_request.py: what the request asks for (a 400 otherwise);
- events/admission.py: the per-client and per-process limits (429, 503);
- events/access.py: subscribe token or read policy (403); events/access_watch.py ends
  the stream when that access ends;
- events/resume.py: the start position, the resume plan, the paged replay and the
  hand-over to live delivery;
- events/transport.py: the connection below ASGI (slow-reader bound, direct writes);
- events/rejection.py: the JSON answer to a refused request;
- events/http_consumer.py: the consumer loop, without a layer channel.

Phases:

    CHECKING   the request is checked and its start read from the store; nothing is
               sent yet (a refusal, or a HEAD, is answered and the consumer ends)
    REPLAYING  the head is out and the hub joined: live frames are held while stored
               events after the start (or the client's id) are written
    LIVE       the hub calls deliver_batch()/heartbeat() directly
    CLOSED     ended by the server (close_stream), the client (disconnect) or shutdown

Intentional divergence from AsyncHttpConsumer: its http_request() ends the consumer as
soon as handle() returns, and it dispatches one message at a time, so the usual loop
inside handle() never sees the client's disconnect (django/channels#1302, #1747).
Here the request's handling returns once the stream is set up, the consumer stays alive
waiting for http.disconnect, and events reach it from the hub, not through dispatch.
"""

from __future__ import annotations

import asyncio
import enum
import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from channels.exceptions import StopConsumer

from events import access, admission, cors, metrics, rejection, resume, shutdown, sse
from events.access_watch import AccessWatch
from events.conf import conf
from events.frames import Frame, framed, unwritten
from events.http_consumer import PlainHttpConsumer
from events.hub import get_hub
from events.log import log_failure
from events.positions import format_position
from events.rejection import Rejection
from events.resume import NOTHING_HELD, HeldFrames
from events.stream_request import client_address, parse_stream_request
from events.transport import ASGI_ONLY, Transport, transport_for

if TYPE_CHECKING:
    from events.hub import Hub

logger = logging.getLogger(__name__)


class Phase(enum.Enum):
    CHECKING = "checking"
    REPLAYING = "replaying"
    LIVE = "live"
    CLOSED = "closed"


# Module names for the hot path: no class attribute lookup per frame.
CHECKING, REPLAYING, LIVE, CLOSED = Phase.CHECKING, Phase.REPLAYING, Phase.LIVE, Phase.CLOSED
STREAM_HEADERS = [
    (b"Content-Type", b"text/event-stream"),
    (b"Cache-Control", b"no-cache"),
    (b"X-Accel-Buffering", b"no"),
]
CHECK_FAILED = "the server could not check this request; try again"
SLOW_READER = "stream %s has %d bytes queued for a client that does not read; ending it"


# The stream's own attributes, and the two of Channels' it uses, in slots: each open
# stream holds one consumer for its lifetime, and the instance dict Channels' classes
# give it would grow past a resize with these in it.
STREAM_SLOTS = (
    "scope",
    "base_send",
    "phase",
    "channels",
    "positions",
    "held",
    "last_write",
    "transport",
    "ticket",
    "_hub",
    "end_reason",
    "_watch",
)


class EventStreamConsumer(PlainHttpConsumer):
    __slots__ = STREAM_SLOTS

    def __init__(self) -> None:
        # AsyncHttpConsumer.__init__ is not called: the body list it makes is for its
        # http_request, which this class replaces.

        # Set only on streams whose access may end while open.
        self._watch: AccessWatch | None = None
        self.phase = CHECKING
        self.channels: tuple[str, ...] = ()
        self.positions: dict[str, int] = {}
        self.held = NOTHING_HELD
        self.last_write = 0.0
        self.transport: Transport = ASGI_ONLY
        self.ticket: admission.Ticket | None = None
        # The hub while this stream is in it: left once, whichever way the stream ends.
        self._hub: Hub | None = None
        # Why the stream ended, once it has (the first reason given wins).
        self.end_reason: metrics.CloseReason | None = None

    @property
    def closed(self) -> bool:
        return self.phase is CLOSED

    async def http_request(self, message: dict[str, Any]) -> None:
        try:
            if message.get("body") or message.get("more_body"):
                # events/asgi.py refuses a declared body; this is one a server streamed in.
                raise Rejection(413, "a stream request has no body")
            self.ticket = admission.Ticket(client_address(self.scope))
            self.ticket.begin_setup()
            await self._start(self.ticket)
        except Rejection as refusal:
            await self._refuse(refusal)
        except Exception as exc:
            # A failing session store, database or custom policy: a reason, never a 500.
            log_failure(logger, exc, "stream request for %s failed before it started", self.channels)
            if self.phase is CHECKING:
                await self._refuse(Rejection(503, CHECK_FAILED))
        finally:
            if self.ticket is not None:
                self.ticket.end_setup()
        if self.phase is CHECKING or (self.phase is CLOSED and self.end_reason is None):
            self.phase = CLOSED  # answered without a stream (a refusal, a HEAD)
            raise StopConsumer()

    async def _start(self, ticket: admission.Ticket) -> None:
        request = parse_stream_request(self.scope)
        self.channels = request.channels
        ticket.admit()  # before any database work: a full process or client costs nothing more
        expires = await access.authorise_read(self.scope, self.channels, request.token)
        hub = get_hub()
        start = await resume.start_positions(hub.positions, self.channels)
        headers = [*STREAM_HEADERS, *cors.headers_for(request.origin)]
        if request.head:
            self.phase = CLOSED
            await self.send_response(200, b"", headers=headers)
            return
        self._hold_live_frames()
        metrics.stream_opened()
        await self.send_headers(status=200, headers=headers)
        self.transport = transport_for(self.scope)
        await self.write(sse.format_retry(conf.retry_ms) + sse.format_comment("ok"))
        self.transport.start_direct()
        try:
            self._hub = hub
            live_from = await hub.subscribe(self)
            if self.closed:
                # Ended (the layer lost, say) while subscribe() was still adding us, after
                # close_stream() had already left the hub: leave again, for good.
                self._hub = hub
                await self._leave_hub()
                return
            await resume.catch_up(self, live_from, request.resume or format_position(start, self.channels))
        except Exception as exc:
            log_failure(
                logger, exc, "stream %s could not start; closing it (the client retries)", self.channels
            )
            await self.close_stream(reason="error")
            return
        if not self.closed:
            # Armed only now that the stream is set up, so that expiry never races it.
            self._watch = AccessWatch.start(self, expires)

    def _hold_live_frames(self) -> None:  # until go_live()
        self.phase, self.held = REPLAYING, HeldFrames.for_replay()

    async def go_live(self) -> None:
        """The replay is written: the frames held meanwhile (one write), then live."""
        while batch := self.held.take():
            await self._emit(batch)
        if self.phase is REPLAYING:
            self.phase, self.held = LIVE, NOTHING_HELD

    def framed(self, body: bytes) -> bytes:
        return framed(self.positions, self.channels, body)

    async def deliver_batch(self, channel: str, batch: Sequence[Frame], chunk: bytes) -> None:
        """Events of `channel` in order (consecutive seqs), as one write; `chunk` is
        their frames joined, the same bytes object for every stream of the channel."""
        phase = self.phase
        if phase is LIVE:
            positions = self.positions
            if len(self.channels) == 1 and positions.get(channel, 0) < batch[0][1]:
                # The usual case: everything is new to this stream.
                positions[channel] = batch[-1][1]
                await self.write(chunk)
                return
            await self._emit(batch)
        elif phase is REPLAYING and self.held.hold_many(batch):
            logger.warning("stream %s fell behind while catching up; ending it", self.channels)
            await self.close_stream(abort=True, reason="fell_behind")

    async def _emit(self, batch: Sequence[Frame]) -> None:
        data = unwritten(batch, self.positions, self.channels)
        if data:
            await self.write(data)

    async def heartbeat(self) -> None:
        await self.write(sse.HEARTBEAT)

    async def write(self, data: bytes) -> None:
        """The one place a stream's bytes go out: straight to the socket where the
        server allows (events/transport.py), else through the ASGI send."""
        if self.phase is CLOSED:
            return
        self.last_write = asyncio.get_running_loop().time()
        metrics.tally.bytes += len(data)
        transport = self.transport
        if not transport.write(data):
            await self.send({"type": "http.response.body", "body": data, "more_body": True})
        # The bound counts what was queued before this write and is still not taken;
        # nothing queued skips reading the setting (ARCHITECTURE.md, "Invariants" and
        # "Performance notes").
        queued = transport.queued()
        if queued and queued - len(data) > conf.max_queued_bytes:
            logger.warning(SLOW_READER, self.channels, queued)
            await self.close_stream(abort=True, reason="slow_reader")

    def revoke(self, reason: str) -> None:
        """End the stream at once with an `access-revoked` event (its session logged out)."""
        if self._watch is not None:
            self._watch.revoke(reason)

    async def close_stream(
        self, abort: bool = False, final: bytes = b"", reason: metrics.CloseReason = "error"
    ) -> None:
        """End the response from the server side; the client reconnects and resumes.
        With `abort`, the connection is dropped at once with what is queued for it (a
        client that does not read would never take the rest anyway)."""
        if self.phase is CLOSED:
            return
        await self._close(reason)
        if abort and self.transport.abort():
            return
        await self.send({"type": "http.response.body", "body": final, "more_body": False})

    async def disconnect(self) -> None:
        await self._close("client_gone")

    async def _close(self, reason: metrics.CloseReason) -> None:
        if self.phase is REPLAYING or self.phase is LIVE:
            self.end_reason = reason
            metrics.stream_closed(reason)
        self.phase, self.held = CLOSED, NOTHING_HELD
        await self._leave_hub()

    async def _leave_hub(self) -> None:
        # The hub's bookkeeping runs before its first await: even a cancelled stream leaves.
        hub, self._hub = self._hub, None
        if hub is not None:
            try:
                await hub.unsubscribe(self)
            except Exception as exc:
                log_failure(logger, exc, "stream %s: leaving the hub failed", self.channels)

    async def _refuse(self, refusal: Rejection) -> None:
        self.phase = CLOSED
        metrics.stream_rejected(refusal.status)
        headers = rejection.headers(rejection.request_origin(self.scope.get("headers")), refusal.retry_after)
        await self.send_response(refusal.status, rejection.body(refusal.reason), headers=headers)

    def settle(self) -> None:
        # Once the stream is open, only an access watch that asks the policy again reads
        # the scope; otherwise nothing keeps it for the stream's lifetime.
        if self.phase is not CLOSED and (self._watch is None or not self._watch.reads_scope):
            self.scope = None

    async def cancelled(self) -> None:
        # daphne cancels every application at shutdown (SIGTERM).
        if self.phase is REPLAYING or self.phase is LIVE:
            await shutdown.end_stream(self, self.transport)

    async def ended(self) -> None:
        # Also when daphne cancels us (at shutdown, or outliving the connection).
        if self._watch is not None:
            self._watch.stop()
        if self.ticket is not None:
            self.ticket.release()
        await self._close("error")  # counted once: any reason given before stands
