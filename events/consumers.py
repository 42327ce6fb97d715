"""The SSE stream: one AsyncHttpConsumer per open connection (README "The stream").

The consumer orchestrates; each concern lives beside it:
- events/stream_request.py: what the request asks for (a 400 otherwise);
- events/admission.py: the per-client and per-process limits (429, 503);
- events/access.py: subscribe token or read policy (403); events/access_watch.py ends
  the stream when that access ends;
- events/resume.py: the start position, the resume plan and the paged replay;
- events/transport.py: the connection below ASGI (slow-reader bound, direct writes);
- events/rejection.py: the JSON answer to a refused request.

Phases (ARCHITECTURE.md):

    CHECKING   the request is checked, its start read from the store; nothing sent yet
               (a refusal, or a HEAD, is answered and the consumer ends)
    REPLAYING  the head is out and the hub is joined: live frames are held in `pending`
               while stored events after the start (or the client's id) are written
    LIVE       the hub calls deliver()/heartbeat() directly
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
import random
from typing import TYPE_CHECKING, Any

from channels.exceptions import StopConsumer
from channels.generic.http import AsyncHttpConsumer

from events import access, admission, cors, metrics, rejection, resume, sse
from events.access_watch import AccessWatch
from events.conf import conf
from events.hub import get_hub
from events.log import log_failure
from events.positions import format_position
from events.rejection import Rejection
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


CHECKING, REPLAYING, LIVE, CLOSED = Phase.CHECKING, Phase.REPLAYING, Phase.LIVE, Phase.CLOSED
Frame = tuple[str, int, bytes, bytes]
# What a stream that is not replaying holds in `pending`: never appended to (a replaying
# stream holds its frames in a list of its own).
NO_FRAMES: list[Frame] = []
# Live frames held for one stream while it replays from the store; a stream that falls
# this far behind (in frames, or in bytes: PENDING_BYTES_FACTOR x EVENTS_MAX_QUEUED_BYTES)
# is ended and resumes instead, keeping what it has already written.
MAX_PENDING_FRAMES = 10_000
PENDING_BYTES_FACTOR = 4
# At shutdown, clients are told to come back after retry + up to this much, spread at
# random, so that they do not all reconnect in the same instant.
SHUTDOWN_RETRY_SPREAD_MS = 10_000
# daphne drops every connection right after the applications have ended, discarding
# unsent bytes; a stream waits this long at most for its last frame to leave.
SHUTDOWN_DRAIN_SECONDS = 2.0
STREAM_HEADERS = [
    (b"Content-Type", b"text/event-stream"),
    (b"Cache-Control", b"no-cache"),
    (b"X-Accel-Buffering", b"no"),
]
CHECK_FAILED = "the server could not check this request; try again"


class EventStreamConsumer(AsyncHttpConsumer):  # type: ignore[misc]  # channels has no type information
    # Only on streams whose access can end while they are open (a token's expiry, a
    # session's user): a class default otherwise, so that the others carry nothing.
    _watch: AccessWatch | None = None
    # No per-connection layer channel: the process's hub listens for all streams
    # (get_channel_layer(None) is None, so AsyncConsumer sets none up).
    channel_layer_alias = None

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.phase = CHECKING
        self.channels: tuple[str, ...] = ()
        self.positions: dict[str, int] = {}
        self.pending = NO_FRAMES
        self.pending_bytes = 0
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
            await self._start()
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
            # Answered without a stream (a refusal, a HEAD): nothing to wait for.
            self.phase = CLOSED
            raise StopConsumer()
        # A stream stays open: the consumer now waits for http.disconnect.

    async def _start(self) -> None:
        request = parse_stream_request(self.scope)
        self.channels = request.channels
        assert self.ticket is not None
        self.ticket.admit()  # before any database work: a full process or client costs nothing more
        expires = await access.authorise_read(self.scope, self.channels, request.token)
        hub = get_hub()
        start = await resume.start_positions(hub.positions, self.channels)
        if request.head:
            self.phase = CLOSED
            await self.send_headers(status=200, headers=[*STREAM_HEADERS, *cors.headers_for(request.origin)])
            await self.send_body(b"")
            return
        self._hold_live_frames()
        metrics.stream_opened()
        await self.send_headers(status=200, headers=[*STREAM_HEADERS, *cors.headers_for(request.origin)])
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
            await self._catch_up(live_from, request.resume or format_position(start, self.channels))
        except Exception as exc:
            log_failure(
                logger, exc, "stream %s could not start; closing it so the client retries", self.channels
            )
            await self.close_stream(reason="error")
            return
        if not self.closed:
            # Armed only now that the stream is set up, so that expiry never races it.
            self._watch = AccessWatch.start(self, expires)

    async def _catch_up(self, live_from: dict[str, int], resume_id: str) -> None:
        """Replay what the client missed, then switch to live delivery.

        Everything after `live_from` reaches us through deliver() (held in `pending`
        meanwhile); everything up to it comes from the store. Seqs at or below the
        position already written are skipped, so the hand-over has no gap and no
        duplicate.
        """
        self.positions = dict(live_from)
        plan = await resume.plan_resume(self.channels, live_from, resume_id, resume.STORE)
        if not await resume.replay_plan(self, plan, live_from, resume.STORE):
            return
        # Set the client's last id even if no event has come yet, so that a reconnect
        # before the first event still resumes from here.
        await self.write(sse.format_id(format_position(self.positions, self.channels)))
        metrics.flush()  # the replay's figures, now rather than at the next heartbeat tick
        while self.pending:
            batch, self.pending = self.pending, []
            self.pending_bytes = 0
            for channel, seq, frame, body in batch:
                await self._emit(channel, seq, frame, body)
        if self.phase is REPLAYING:
            self.phase, self.pending = LIVE, NO_FRAMES

    def _hold_live_frames(self) -> None:
        """From now until the replay is done, deliver() keeps live frames in `pending`."""
        self.phase, self.pending, self.pending_bytes = REPLAYING, [], 0

    def framed(self, body: bytes) -> bytes:
        return sse.id_line(format_position(self.positions, self.channels)) + body

    # -- live (called by the hub) --------------------------------------------------

    async def deliver(self, channel: str, seq: int, frame: bytes, body: bytes) -> None:
        if self.phase is REPLAYING:
            self.pending.append((channel, seq, frame, body))
            # Frames are shared by every stream of the channel, but a stream that has
            # fallen far behind must not pin an unbounded amount of them.
            self.pending_bytes += len(frame)
            if (
                len(self.pending) > MAX_PENDING_FRAMES
                or self.pending_bytes > PENDING_BYTES_FACTOR * conf.max_queued_bytes
            ):
                logger.warning("stream %s fell behind while catching up; ending it", self.channels)
                await self.close_stream(abort=True, reason="fell_behind")
            return
        await self._emit(channel, seq, frame, body)

    async def _emit(self, channel: str, seq: int, frame: bytes, body: bytes) -> None:
        if seq <= self.positions.get(channel, 0):
            return
        self.positions[channel] = seq
        if len(self.channels) == 1:
            await self.write(frame)  # the hub's encoding, shared by all such streams
        else:
            await self.write(self.framed(body))

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
        queued = transport.queued()
        # Nothing queued is the usual case: skip reading the setting (a Django settings
        # lookup per write costs more than the rest of the write).
        if queued and queued > conf.max_queued_bytes:
            logger.warning(
                "stream %s has %d bytes queued for a client that does not read; ending it",
                self.channels,
                queued,
            )
            await self.close_stream(abort=True, reason="slow_reader")

    def revoke(self, reason: str) -> None:
        """End the stream at once with an `access-revoked` event (its session logged out)."""
        if self._watch is not None:
            self._watch.revoke(reason)

    # -- end -----------------------------------------------------------------------

    async def close_stream(
        self, abort: bool = False, final: bytes = b"", reason: metrics.CloseReason = "error"
    ) -> None:
        """End the response from the server side; the client reconnects and resumes.

        With `abort`, the connection is dropped at once together with what is queued
        for it (a client that does not read would never take the rest anyway).
        """
        if self.phase is CLOSED:
            return
        self._end(reason)
        await self._leave_hub()
        if abort and self.transport.abort():
            return
        await self.send({"type": "http.response.body", "body": final, "more_body": False})

    async def disconnect(self) -> None:
        self._end("client_gone")
        await self._leave_hub()

    def _end(self, reason: metrics.CloseReason) -> None:
        if self.phase is REPLAYING or self.phase is LIVE:
            self.end_reason = reason
            metrics.stream_closed(reason)
        self.phase, self.pending = CLOSED, NO_FRAMES

    async def _leave_hub(self) -> None:
        # The hub's bookkeeping happens before its first await: a stream cancelled
        # meanwhile is never left in it.
        hub, self._hub = self._hub, None
        if hub is not None:
            try:
                await hub.unsubscribe(self)
            except Exception as exc:
                log_failure(logger, exc, "stream %s: leaving the hub failed", self.channels)

    async def _refuse(self, refusal: Rejection) -> None:
        self.phase = CLOSED
        metrics.stream_rejected(refusal.status)
        origin = rejection.request_origin(self.scope.get("headers"))
        headers = rejection.headers(origin, refusal.retry_after)
        await self.send_response(refusal.status, rejection.body(refusal.reason), headers=headers)

    async def _serve(self, scope: Any, receive: Any, send: Any) -> None:
        """AsyncConsumer.__call__ without a layer channel, and without its
        await_many_dispatch: for a single message source that helper keeps a Task, an
        asyncio.wait() waiter and its set alive for as long as the connection is open.
        A plain loop dispatches the same messages in the same order, one at a time, with
        less memory per open stream (ARCHITECTURE.md)."""
        self.scope = scope
        self.channel_layer = None
        self.base_send = send
        try:
            while True:
                await self.dispatch(await receive())
        except StopConsumer:
            pass

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        try:
            await self._serve(scope, receive, send)
        except asyncio.CancelledError:
            # daphne cancels every application at shutdown (SIGTERM). The connection is
            # still open here: end the stream with a jittered retry so that thousands
            # of browsers do not all come back in the same millisecond.
            if self.phase is REPLAYING or self.phase is LIVE:
                retry = conf.retry_ms + random.randint(0, SHUTDOWN_RETRY_SPREAD_MS)
                try:
                    await self.close_stream(final=sse.format_retry(retry), reason="shutdown")
                    await self.transport.drain(SHUTDOWN_DRAIN_SECONDS)
                except Exception:
                    logger.debug("could not end a stream at shutdown", exc_info=True)
            raise
        finally:
            # Also when the server cancels us (daphne does at shutdown and for instances
            # that outlive their connection): never leave a dead stream in the hub.
            if self._watch is not None:
                self._watch.stop()
            if self.ticket is not None:
                self.ticket.release()
            self._end("error")  # counted once: any reason given before stands
            await self._leave_hub()
