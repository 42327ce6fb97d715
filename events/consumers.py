"""The SSE stream: one AsyncHttpConsumer per open connection (SPEC 4.1-4.3).

Lifecycle:

    http.request -> handle(): validate, authorise (4xx JSON, no stream), read the
                    start position from the store (503 JSON if it fails), then
                    headers + `retry:`/comment at once
                 -> hub.subscribe(): live frames start arriving in deliver(),
                    buffered in `pending` while we catch up
                 -> replay stored events after the start (or the client's resume
                    id) up to the hub's position, flush pending
                 -> live: the hub calls deliver()/heartbeat() directly
    http.disconnect -> disconnect(): leave the hub, forget everything

Intentional divergence from AsyncHttpConsumer: its http_request() ends the consumer as
soon as handle() returns, and it dispatches one message at a time, so the usual loop
inside handle() never sees the client's disconnect (django/channels#1302, #1747).
Here handle() returns once the stream is set up, the consumer stays alive waiting for
http.disconnect, and events reach it from the hub, not through dispatch.
"""

from __future__ import annotations

import asyncio
import collections
import json
import logging
import random
import time
from typing import Any
from urllib.parse import parse_qsl

from channels.exceptions import StopConsumer
from channels.generic.http import AsyncHttpConsumer
from django.conf import settings
from django.http.request import split_domain_port, validate_host

from events import cors, fdlimit, metrics, reauth, replay, sse, store
from events.backpressure import SERVER_SEND_KEY, queued_bytes, transport_of
from events.conf import conf
from events.db import stream_db
from events.hub import get_hub
from events.log import describe, outage
from events.names import CHANNEL_MAX, channel_error
from events.policy import denied_channels, depends_on_user
from events.positions import format_position, parse_position
from events.tokens import TokenError, read_token

logger = logging.getLogger(__name__)

STREAM_RESET = "stream-reset"
TOKEN_EXPIRED = "token-expired"
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
# An id is at most `<channel>:<19 digits>` per channel, joined by commas.
ID_BYTES_PER_CHANNEL = CHANNEL_MAX + 21
# A replay writes its next page once its client has taken all but this share of
# EVENTS_MAX_QUEUED_BYTES (a page is at most half of it: events/replay.py).
REPLAY_LOW_WATER_FACTOR = 4
# A replay waiting for its client measures the client's rate over at least this long
# before it may end it as too slow (EVENTS_REPLAY_MIN_BYTES_PER_SECOND).
REPLAY_RATE_WINDOW_SECONDS = 5.0
# How often a replay waiting for its client looks at what is queued.
REPLAY_POLL_SECONDS = 0.05


# Open streams per client address in this process (EVENTS_MAX_STREAMS_PER_CLIENT), and
# all of them (EVENTS_MAX_STREAMS_PER_PROCESS, events/fdlimit.py).
_open_by_client: collections.Counter[str] = collections.Counter()
_open_streams = 0
# Retry-After on a refusal for too many streams: long enough for some to end.
STREAMS_FULL_RETRY_AFTER = 10


_full_warned_at = 0.0
FULL_WARNING_EVERY_SECONDS = 60.0


def _warn_full(limit: int) -> None:
    # Once a minute at most: a client hammering a full process must not flood the log.
    global _full_warned_at
    now = time.monotonic()
    if now - _full_warned_at >= FULL_WARNING_EVERY_SECONDS:
        _full_warned_at = now
        logger.warning(
            "refusing streams: %d open, the most this process's descriptors allow "
            "(raise `ulimit -n`, or set EVENTS_MAX_STREAMS_PER_PROCESS)",
            limit,
        )


# Streams per client address still being set up: from the request to live delivery,
# the replay included (EVENTS_MAX_PENDING_SETUPS_PER_CLIENT).
_setting_up_by_client: collections.Counter[str] = collections.Counter()
# What a client refused for too many set-ups at once is told to wait, in seconds.
SETUP_RETRY_AFTER_SECONDS = 1


def _direct_request(server_send: Any) -> Any:
    """daphne's request object for a stream whose body chunks may go straight to the
    socket (see _write_direct), or None: not daphne, TLS, or a response not chunked."""
    transport = transport_of(server_send)
    if transport is None or getattr(transport, "socket", None) is None or getattr(transport, "TLS", True):
        return None
    request = server_send.args[0]
    return request if getattr(request, "chunked", False) else None


def _write_direct(request: Any, transport: Any, data: bytes) -> bool:
    """The hot path of fan-out under daphne: one body chunk, straight to the socket.

    Through the ASGI send, each chunk passes daphne's reply checks and Twisted's
    Request.write, and Twisted then registers the socket with the event loop for
    writing and unregisters it once flushed, a loop iteration later: two epoll_ctl
    calls and a dozen Python frames per stream per event (a profile of 1,000 streams
    at 20 events/s spent 3/4 of the server's CPU there).
    When nothing is queued in Twisted for this connection, the same chunk (HTTP/1.1
    chunked framing, as Twisted's toChunk writes it) is sent to the socket at once;
    whatever the kernel does not take goes to Twisted's buffer, so order is kept and
    backpressure (events/backpressure.py) still sees it. Anything unusual (a response
    finished, a connection closing or closed, bytes already queued) answers False,
    and the chunk takes the ordinary ASGI path.
    """
    if (
        request.finished
        or request._disconnected
        or not transport.connected
        or transport.disconnecting
        or transport._tempDataLen
        or len(transport.dataBuffer) > transport.offset
    ):
        return False
    chunk = b"%x\r\n%b\r\n" % (len(data), data)
    try:
        sent = transport.socket.send(chunk)
    except (BlockingIOError, InterruptedError):
        sent = 0
    except OSError:
        return False  # the connection is failing: let Twisted find out and report it
    request.sentLength += len(data)
    if sent < len(chunk):
        transport.write(chunk[sent:])
    return True


class BadRequest(Exception):
    def __init__(self, status: int, reason: str, retry_after: int | None = None) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason
        self.retry_after = retry_after


def _headers(scope: dict[str, Any]) -> dict[bytes, bytes]:
    return {name.lower(): value for name, value in scope.get("headers", [])}


# What Django's HttpRequest.get_host() allows when DEBUG is on and ALLOWED_HOSTS empty.
DEBUG_HOSTS = [".localhost", "127.0.0.1", "[::1]"]


def host_error(scope: dict[str, Any], headers: dict[bytes, bytes]) -> str | None:
    """Streams do not pass through Django's request handling, so they check the Host
    header against ALLOWED_HOSTS here, as HttpRequest.get_host() would: without it a
    public stream answers any Host, which DNS rebinding relies on."""
    host = b""
    if settings.USE_X_FORWARDED_HOST:
        host = headers.get(b"x-forwarded-host", b"")
    host = host or headers.get(b"host", b"")
    text = host.decode("latin-1")
    if not text and scope.get("server"):
        name, port = scope["server"][0], scope["server"][1]
        text = f"{name}:{port}" if port else str(name)
    domain, _ = split_domain_port(text)
    allowed = settings.ALLOWED_HOSTS or (DEBUG_HOSTS if settings.DEBUG else [])
    if domain and validate_host(domain, allowed):
        return None
    return f"invalid Host header {text[:100]!r}: add it to ALLOWED_HOSTS"


def requested_channels(scope: dict[str, Any], query: list[tuple[str, str]]) -> tuple[str, ...]:
    """The stream's channels, validated (SPEC 4.1); BadRequest(400) otherwise."""
    path_channel = scope.get("url_route", {}).get("kwargs", {}).get("channel")
    if path_channel:
        names = [path_channel]
    else:
        # dict.fromkeys: drop repeats, keep the order given.
        names = list(dict.fromkeys(value for key, value in query if key == "channel"))
    if not names:
        raise BadRequest(400, "no channel requested: use /events/<channel>/ or /events/?channel=<name>")
    limit = conf.max_channels_per_stream
    if len(names) > limit:
        raise BadRequest(400, f"{len(names)} channels requested; at most {limit} per stream")
    for name in names:
        error = channel_error(name)
        if error:
            raise BadRequest(400, error)
    return tuple(names)


class EventStreamConsumer(AsyncHttpConsumer):
    # Set only on streams opened with a subscribe token (class defaults otherwise, so
    # that the other streams carry nothing for them): the timer that ends the stream
    # at the token's expiry, and the task that does so.
    _expiry: asyncio.TimerHandle | None = None
    _expiry_task: asyncio.Task[None] | None = None
    # Set only on streams a session authorised for channels that depend on its user
    # (events/reauth.py): the session's digest, the timer of the next check and its task.
    _session: str | None = None
    _reauth: asyncio.TimerHandle | None = None
    _reauth_task: asyncio.Task[None] | None = None
    _revoke_task: asyncio.Task[None] | None = None

    # No per-connection layer channel: the process's hub listens for all streams
    # (get_channel_layer(None) is None, so AsyncConsumer sets none up).
    channel_layer_alias = None  # type: ignore[assignment]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.channels: tuple[str, ...] = ()
        self.positions: dict[str, int] = {}
        self.pending: list[tuple[str, int, bytes, bytes]] | None = None
        self.pending_bytes = 0
        self.pending_limit = 0
        self.last_write = 0.0
        self.streaming = False
        self.subscribed = False
        self.closed = False
        self.transport: Any = None
        # Set once the stream's first bytes are out, when its chunks may be written
        # straight to the socket (_write_direct).
        self.direct_request: Any = None
        self.client_address: str | None = None
        self.counted = False
        self.setup_address: str | None = None
        self.responded = False
        # Bytes of this stream's replay counted against the process's replay budget.
        self.replay_held = 0
        # Why the stream ended, once it has (the first reason given wins).
        self.end_reason: metrics.CloseReason | None = None

    # -- request -------------------------------------------------------------------

    async def http_request(self, message: dict[str, Any]) -> None:
        try:
            if message.get("body") or message.get("more_body"):
                # routing.py refuses a declared body; this is one a server streamed in.
                raise BadRequest(413, "a stream request has no body")
            self._begin_setup()
            await self.handle(b"")
        except BadRequest as exc:
            await self._reject(exc.status, exc.reason, exc.retry_after)
        except Exception as exc:
            # A failing session store, database or custom policy: a reason, never a 500.
            cause = outage(exc)
            if cause is not None:
                logger.warning("stream request for %s refused (%s)", self.channels, describe(cause))
            else:
                logger.exception("stream request for %s failed before it started", self.channels)
            if not self.responded:
                await self._reject(503, "the server could not check this request; try again")
        finally:
            self._end_setup()
        if not self.streaming:
            await self.disconnect()
            raise StopConsumer()
        # A stream stays open: the consumer now waits for http.disconnect.

    async def handle(self, body: bytes) -> None:
        # Undecodable bytes become U+FFFD, which no valid name contains: a 400 below.
        query = parse_qsl(
            self.scope.get("query_string", b"").decode("latin-1"), keep_blank_values=True, errors="replace"
        )
        headers = _headers(self.scope)
        bad_host = host_error(self.scope, headers)
        if bad_host:
            raise BadRequest(400, bad_host)
        self.channels = requested_channels(self.scope, query)
        resume = headers.get(b"last-event-id", b"").decode("latin-1") or next(
            (value for key, value in query if key == "last_event_id"), ""
        )
        if len(resume) > ID_BYTES_PER_CHANNEL * conf.max_channels_per_stream:
            raise BadRequest(400, "Last-Event-ID is longer than any id this server hands out")
        # Before any database work: a full process or client costs nothing more.
        self._admit()
        # The Unix time at which a subscribe token's grant ends, or None (a session).
        expires = await self._authorise(query)
        # The stream's start, read before the head goes out: an event committed once the
        # client has the head (EventSource's `open`) is after it, and reaches the stream
        # as a replay if the hub's position is older. A resume id is its own start; the
        # query still runs, so that a database that is down is a 503 before any byte.
        start = await stream_db(store.last_seqs)(self.channels)
        resume = resume or format_position(start, self.channels)

        self.responded = True
        await self.send_headers(status=200, headers=self._stream_headers(headers))
        if self.scope.get("method") == "HEAD":
            await self.send_body(b"")
            return
        self.streaming = True
        metrics.stream_opened()
        self.transport = transport_of(self.scope.get(SERVER_SEND_KEY))
        await self._write(sse.format_retry(conf.retry_ms) + sse.format_comment("ok"))
        self.direct_request = _direct_request(self.scope.get(SERVER_SEND_KEY))

        self._hold_live_frames()
        try:
            hub = get_hub()
            self.subscribed = True
            live_from = await hub.subscribe(self)
            if self.closed:
                # Ended (the layer lost, say) while subscribe() was still adding us, after
                # close_stream() had already left the hub: leave again, for good.
                await hub.unsubscribe(self)
                return
            await self._catch_up(live_from, resume)
        except Exception as exc:
            cause = outage(exc)
            if cause is not None:
                logger.warning("stream %s could not start (%s); closing it", self.channels, describe(cause))
            else:
                logger.exception("stream %s could not start; closing it so the client retries", self.channels)
            await self.close_stream(reason="error")
            return
        if expires is not None and not self.closed:
            # Armed only now that the stream is set up, so that expiry never races it.
            loop = asyncio.get_running_loop()
            self._expiry = loop.call_at(loop.time() + expires - time.time(), self._expire)
        elif expires is None and not self.closed and depends_on_user(self.channels):
            self._session = reauth.session_digest(self.scope)
            if self._session is not None:
                reauth.track(self, self._session)
                self._arm_reauth()

    def _hold_live_frames(self) -> None:
        """From now until the replay is done, deliver() keeps live frames in `pending`."""
        self.pending = []
        self.pending_bytes = 0
        # Read once: deliver() checks it for every frame held.
        self.pending_limit = PENDING_BYTES_FACTOR * conf.max_queued_bytes

    async def _authorise(self, query: list[tuple[str, str]]) -> int | None:
        """SPEC 4.5: a subscribe token grants exactly its channels, until the expiry it
        returns; otherwise the policy decides (and None is returned)."""
        token = next((value for key, value in query if key == "token"), None)
        if token is None:
            # From clients that can send headers (fetch-based SSE, apps): kept out of URLs
            # and so out of access logs.
            scheme, _, value = (
                _headers(self.scope).get(b"authorization", b"").decode("latin-1").partition(" ")
            )
            if scheme.lower() == "bearer" and value.strip():
                token = value.strip()
        if token is not None:
            try:
                grant = read_token(token)
            except TokenError as exc:
                raise BadRequest(403, str(exc)) from exc
            outside = [name for name in self.channels if name not in grant.channels]
            if outside:
                raise BadRequest(403, f"the subscribe token does not grant channel {outside[0]!r}")
            # The grant lasts until expiry, not for as long as the connection does.
            return grant.expires
        denied = await denied_channels(self.scope, self.channels)
        if denied:
            raise BadRequest(403, f"not allowed to read channel {denied[0]!r}")
        return None

    def _begin_setup(self) -> None:
        """Count this stream as being set up for its client, or refuse it (429): one
        client must not queue unbounded work (queries, group joins, replays) ahead of
        everyone else's streams."""
        limit = conf.max_pending_setups_per_client
        client = self.scope.get("client")
        if not limit or not client:
            return
        address = str(client[0])
        if _setting_up_by_client[address] >= limit:
            raise BadRequest(
                429,
                f"too many streams being set up at once from {address} (at most {limit}); retry shortly",
                retry_after=SETUP_RETRY_AFTER_SECONDS,
            )
        _setting_up_by_client[address] += 1
        self.setup_address = address

    def _end_setup(self) -> None:
        address, self.setup_address = self.setup_address, None
        if address is not None:
            _setting_up_by_client[address] -= 1
            if _setting_up_by_client[address] <= 0:
                del _setting_up_by_client[address]

    def _admit(self) -> None:
        """Count this stream against the process's and its client's limits (given back
        in __call__'s finally), or refuse it: 503 when the process holds all the streams
        its descriptors allow, 429 when this client address holds its share."""
        global _open_streams
        process_limit = fdlimit.process_stream_limit(conf.max_streams_per_process)
        retry = STREAMS_FULL_RETRY_AFTER
        if process_limit is not None and _open_streams >= process_limit:
            _warn_full(process_limit)
            raise BadRequest(
                503, "this server holds all the streams it can; try again later", retry_after=retry
            )
        limit = conf.max_streams_per_client
        client = self.scope.get("client")
        if limit and client:
            address = str(client[0])
            if _open_by_client[address] >= limit:
                raise BadRequest(
                    429, f"too many open streams from {address} (at most {limit})", retry_after=retry
                )
            _open_by_client[address] += 1
            self.client_address = address
        _open_streams += 1
        self.counted = True

    def _release(self) -> None:
        global _open_streams
        if self.counted:
            self.counted = False
            _open_streams -= 1
        if self.client_address is not None:
            _open_by_client[self.client_address] -= 1
            if _open_by_client[self.client_address] <= 0:
                del _open_by_client[self.client_address]
            self.client_address = None

    def _stream_headers(self, request_headers: dict[bytes, bytes]) -> list[tuple[bytes, bytes]]:
        origin = request_headers.get(b"origin")
        return [
            (b"Content-Type", b"text/event-stream"),
            (b"Cache-Control", b"no-cache"),
            (b"X-Accel-Buffering", b"no"),
            *cors.response_headers(
                origin.decode("latin-1") if origin else None, conf.allowed_origins, conf.credentialed_origins
            ),
        ]

    async def _reject(self, status: int, reason: str, retry_after: int | None = None) -> None:
        metrics.stream_rejected(status)
        origin = _headers(self.scope).get(b"origin")
        headers = [
            *([(b"Retry-After", str(retry_after).encode())] if retry_after is not None else []),
            (b"Content-Type", b"application/json"),
            # As Django's SecurityMiddleware adds to its pages (the stream itself needs
            # none: text/event-stream is never sniffed into something runnable).
            (b"X-Content-Type-Options", b"nosniff"),
            *cors.response_headers(
                origin.decode("latin-1") if origin else None, conf.allowed_origins, conf.credentialed_origins
            ),
        ]
        await self.send_response(status, json.dumps({"error": reason}).encode(), headers=headers)

    # -- catching up ---------------------------------------------------------------

    async def _catch_up(self, live_from: dict[str, int], resume: str | None) -> None:
        """Replay what the client missed, then switch to live delivery.

        Everything after `live_from` reaches us through deliver() (buffered in
        `pending` meanwhile); everything up to it comes from the store. Seqs at or
        below the position already written are skipped, so the hand-over has no gap
        and no duplicate.
        """
        self.positions = dict(live_from)
        if resume is not None:
            reset, replays = await _plan_resume(self.channels, live_from, resume)
            # Every frame's id covers all channels, so set each replayed channel back to
            # its resume point before writing anything.
            for channel, after in replays:
                self.positions[channel] = after
            metrics.resumed(reset.values(), any(after < live_from[c] for c, after in replays))
            if reset:
                await self._write(self._reset_frame(reset))
            try:
                for channel, _ in replays:
                    if not await self._replay(channel, live_from[channel]):
                        return
            finally:
                replay.get_budget().release(self.replay_held)
                self.replay_held = 0
        # Set the client's last id even if no event has come yet, so that a reconnect
        # before the first event still resumes from here.
        await self._write(sse.format_id(format_position(self.positions, self.channels)))
        metrics.flush()  # the replay's figures, now rather than at the next heartbeat tick
        while self.pending:
            batch, self.pending = self.pending, []
            self.pending_bytes = 0
            for channel, seq, frame, body in batch:
                await self._emit(channel, seq, frame, body)
        self.pending = None

    async def _replay(self, channel: str, upto: int) -> bool:
        """Write a channel's stored events after its position up to `upto`, a page at a
        time (events/replay.py). False when the stream has ended."""
        budget = replay.get_budget()
        bound = replay.page_bytes()
        while self.positions[channel] < upto:
            if not await self._wait_writable():
                return False
            # What is left queued is below the low-water mark: no longer counted, so
            # that a replay waiting for the budget holds none of it (two waiting on
            # each other's bytes would wait for ever).
            budget.release(self.replay_held)
            self.replay_held = 0
            # Waits, holding no page, while other replays hold the process's budget.
            await budget.acquire(bound)
            self.replay_held += bound
            if self.closed:
                return False
            done = self.positions[channel]
            events, size = await stream_db(store.page_within)(channel, done, upto, bound, replay.PAGE_ROWS)
            # Count what the page holds, not its bound.
            budget.release(bound - size)
            self.replay_held -= bound - size
            if self.closed:
                return False
            if not events or events[0].seq != done + 1:
                # Trimmed while we were replaying: end the stream; the client resumes
                # from its last id and is told that the history no longer reaches it.
                logger.warning("channel %r was trimmed past a replay in progress; ending it", channel)
                await self.close_stream(reason="history_trimmed")
                return False
            # The whole page at once: the client has room for it (see _wait_writable).
            for event in events:
                self.positions[channel] = event.seq
                metrics.tally.replayed += 1
                await self._write(self._framed(sse.event_body(event.data, event.type)))
            del events
        return True

    def _settle_replay(self, queued: int) -> None:
        """Give back the replay budget for what the client has taken: what this stream
        holds is at most what is still queued for it."""
        if self.replay_held > queued:
            replay.get_budget().release(self.replay_held - queued)
            self.replay_held = queued

    async def _wait_writable(self) -> bool:
        """Before a replay reads its next page: wait until the client has taken most of
        what is queued, and end it if it takes less than the minimum rate. False when
        the stream has ended."""
        if self.transport is None:
            # Not daphne: nothing to measure, and the server's send has taken the page.
            self._settle_replay(0)
            return not self.closed
        low_water = conf.max_queued_bytes // REPLAY_LOW_WATER_FACTOR
        queued = queued_bytes(self.transport) or 0
        self._settle_replay(queued)
        if queued <= low_water:
            return not self.closed
        loop = asyncio.get_running_loop()
        started, at_start = loop.time(), queued
        min_rate = conf.replay_min_bytes_per_second
        while not self.closed:
            await asyncio.sleep(REPLAY_POLL_SECONDS)
            queued = queued_bytes(self.transport) or 0
            self._settle_replay(queued)
            if queued <= low_water:
                return not self.closed
            waited = loop.time() - started
            if waited >= REPLAY_RATE_WINDOW_SECONDS and at_start - queued < min_rate * waited:
                logger.warning(
                    "stream %s read its replay at under %d bytes/s; ending it", self.channels, min_rate
                )
                await self.close_stream(abort=True, reason="slow_reader")
        return False

    def _reset_frame(self, reset: dict[str, str]) -> bytes:
        data = sse.dumps({"channels": sorted(reset), "reasons": reset})
        return self._framed(sse.event_body(data, STREAM_RESET))

    def _framed(self, body: bytes) -> bytes:
        return sse.id_line(format_position(self.positions, self.channels)) + body

    # -- live (called by the hub) --------------------------------------------------

    async def deliver(self, channel: str, seq: int, frame: bytes, body: bytes) -> None:
        if self.pending is not None:
            self.pending.append((channel, seq, frame, body))
            # Frames are shared by every stream of the channel, but a stream that has
            # fallen far behind must not pin an unbounded amount of them.
            self.pending_bytes += len(frame)
            if len(self.pending) > MAX_PENDING_FRAMES or self.pending_bytes > self.pending_limit:
                logger.warning("stream %s fell behind while catching up; ending it", self.channels)
                await self.close_stream(abort=True, reason="fell_behind")
            return
        await self._emit(channel, seq, frame, body)

    async def _emit(self, channel: str, seq: int, frame: bytes, body: bytes) -> None:
        if seq <= self.positions.get(channel, 0):
            return
        self.positions[channel] = seq
        if len(self.channels) == 1:
            await self._write(frame)  # the hub's encoding, shared by all such streams
        else:
            await self._write(self._framed(body))

    async def heartbeat(self) -> None:
        await self._write(sse.HEARTBEAT)

    async def _write(self, data: bytes) -> None:
        if self.closed:
            return
        self.last_write = asyncio.get_running_loop().time()
        metrics.tally.bytes += len(data)
        if self.direct_request is None or not _write_direct(self.direct_request, self.transport, data):
            await self.send({"type": "http.response.body", "body": data, "more_body": True})
        if self.transport is not None:
            queued = queued_bytes(self.transport)
            # Nothing queued is the usual case: skip reading the setting (a Django
            # settings lookup per write was a tenth of the fan-out's CPU).
            if queued and queued > conf.max_queued_bytes:
                logger.warning(
                    "stream %s has %d bytes queued for a client that does not read; ending it",
                    self.channels,
                    queued,
                )
                await self.close_stream(abort=True, reason="slow_reader")

    async def close_stream(
        self, abort: bool = False, final: bytes = b"", reason: metrics.CloseReason = "error"
    ) -> None:
        """End the response from the server side; the client reconnects and resumes.

        With `abort`, the connection is dropped at once together with what is queued
        for it (a client that does not read would never take the rest anyway).
        """
        if self.closed:
            return
        self.closed = True
        self._ended(reason)
        self.pending = None
        await self._leave_hub()
        if abort and self.transport is not None:
            self.transport.abortConnection()
            return
        await self.send({"type": "http.response.body", "body": final, "more_body": False})

    # -- end -----------------------------------------------------------------------

    def _expire(self) -> None:
        """The subscribe token ran out: end the stream with a `token-expired` event, so
        that the page knows to open a new stream with a fresh token (EventSource's own
        reconnect, with the old token, is refused with a 403 it cannot read)."""
        self._expiry = None
        if not self.closed:
            logger.info("subscribe token of stream %s expired; ending it", self.channels)
            self._expiry_task = asyncio.get_running_loop().create_task(self._end_expired())

    async def _end_expired(self) -> None:
        # No id line: the client's last event id stays where it was, to resume from.
        data = sse.dumps({"channels": list(self.channels)})
        try:
            await self.close_stream(final=sse.event_body(data, TOKEN_EXPIRED), reason="token_expired")
        except Exception:
            logger.exception("ending stream %s at token expiry failed", self.channels)

    def _arm_reauth(self) -> None:
        # Spread over the last fifth of the interval: streams opened together (a
        # deploy's reconnect wave) are not all checked in the same instant.
        delay = conf.reauth_seconds * random.uniform(0.8, 1.0)
        self._reauth = asyncio.get_running_loop().call_later(delay, self._reauth_due)

    def _reauth_due(self) -> None:
        self._reauth = None
        if not self.closed:
            self._reauth_task = asyncio.get_running_loop().create_task(self._reauthorise())

    async def _reauthorise(self) -> None:
        """Ask the read policy again, with the session as it is now (events/reauth.py)."""
        try:
            denied = await denied_channels(self.scope, self.channels)
        except Exception:
            # A database that is down does not end streams: try again next time.
            logger.exception("checking stream %s again failed", self.channels)
            denied = []
        if self.closed:
            return
        if denied:
            await self._end_revoked(f"no longer allowed to read channel {denied[0]!r}")
        else:
            self._arm_reauth()

    def revoke(self, reason: str) -> None:
        """End the stream at once with an `access-revoked` event (its session logged out)."""
        if not self.closed:
            self._revoke_task = asyncio.get_running_loop().create_task(self._end_revoked(reason))

    async def _end_revoked(self, reason: str) -> None:
        logger.info("stream %s: %s; ending it", self.channels, reason)
        # No id line, as for token-expired: the client's last id stays where it was.
        data = sse.dumps({"channels": list(self.channels), "reason": reason})
        try:
            await self.close_stream(
                final=sse.event_body(data, reauth.ACCESS_REVOKED), reason="access_revoked"
            )
        except Exception:
            logger.exception("ending stream %s whose access ended failed", self.channels)

    async def _drain(self, timeout: float) -> None:
        """Wait until the server has handed everything written to the kernel."""
        if self.transport is None:
            return
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while (queued_bytes(self.transport) or 0) > 0 and loop.time() < deadline:
            await asyncio.sleep(0.01)

    async def _serve(self, scope: Any, receive: Any, send: Any) -> None:
        """AsyncConsumer.__call__ without a layer channel, and without its
        await_many_dispatch: for a single message source that helper keeps a Task, an
        asyncio.wait() waiter and its set alive for as long as the connection is open.
        A plain loop dispatches the same messages in the same order, one at a time, for
        about 2 KB less per open stream (measured with 10,000 streams, bench/)."""
        if self.channel_layer_alias is not None:
            await super().__call__(scope, receive, send)
            return
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
            if self.streaming and not self.closed:
                retry = conf.retry_ms + random.randint(0, SHUTDOWN_RETRY_SPREAD_MS)
                try:
                    await self.close_stream(final=sse.format_retry(retry), reason="shutdown")
                    await self._drain(SHUTDOWN_DRAIN_SECONDS)
                except Exception:
                    logger.debug("could not end a stream at shutdown", exc_info=True)
            raise
        finally:
            if self._expiry is not None:
                self._expiry.cancel()
                self._expiry = None
            if self._reauth is not None:
                self._reauth.cancel()
                self._reauth = None
            if self._session is not None:
                reauth.untrack(self, self._session)
                self._session = None
            self._release()
            # Also when the server cancels us (daphne does at shutdown and for
            # instances that outlive their connection): never leave a dead stream in
            # the hub. The membership bookkeeping happens before the first await.
            self.closed = True
            self._ended("error")  # counted once: any reason given before stands
            if self.subscribed:
                self.subscribed = False
                hub = get_hub()
                try:
                    await hub.unsubscribe(self)
                except Exception:
                    logger.exception("leaving the hub failed")

    async def _leave_hub(self) -> None:
        if self.subscribed:
            self.subscribed = False
            await get_hub().unsubscribe(self)

    def _ended(self, reason: metrics.CloseReason) -> None:
        if self.streaming and self.end_reason is None:
            self.end_reason = reason
            metrics.stream_closed(reason)

    async def disconnect(self) -> None:
        self.closed = True
        self._ended("client_gone")
        self.pending = None
        await self._leave_hub()


async def _plan_resume(
    channels: tuple[str, ...], live_from: dict[str, int], resume: str
) -> tuple[dict[str, str], list[tuple[str, int]]]:
    """Which channels must be reset (with why), and per other channel its resume point
    (the events themselves are read page by page as the replay goes)."""
    parsed = parse_position(resume)
    if parsed is None:
        return dict.fromkeys(channels, "malformed id"), []
    reset: dict[str, str] = {}
    wanted: list[str] = []
    ahead: dict[str, int] = {}
    for channel in channels:
        after = parsed.get(channel)
        if after is None:
            reset[channel] = "id does not cover this channel"
        elif after > live_from[channel]:
            # Past what this process has delivered: either a process that is ahead
            # (the client was on another one, or this one is behind on a burst) or an
            # id this server never gave out. The store tells which.
            ahead[channel] = after
        elif after < live_from[channel]:
            wanted.append(channel)

    def load() -> tuple[dict[str, int], dict[str, int | None]]:
        committed = store.last_seqs(ahead) if ahead else {}
        return committed, store.first_seqs(wanted) if wanted else {}

    committed, firsts = await stream_db(load)() if (ahead or wanted) else ({}, {})
    for channel, after in ahead.items():
        if after > committed[channel]:
            reset[channel] = "unknown id"
    replays = []
    for channel in channels:
        if channel in reset:
            continue
        after = parsed[channel]
        first = firsts.get(channel)
        # Seqs have no holes (events/store.py), and trimming deletes the oldest: the
        # history reaches the id only if its oldest event is at most the next one.
        if channel in wanted and (first is None or first > after + 1):
            reset[channel] = "id is older than the retained history"
            continue
        replays.append((channel, after))
    return reset, replays
