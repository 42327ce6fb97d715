"""A stream's access, watched while it is open: it ends when its access does.

- a stream opened with a subscribe token ends at the token's expiry with a
  `token-expired` event, so that the page knows to open a new stream with a fresh token
  (EventSource's own reconnect, with the old token, is refused with a 403 it cannot read);
- a stream whose channels depend on the session's user (events/policy.py) asks the read
  policy again every EVENTS_REAUTH_SECONDS or so, and at once when its session logs out
  (events/reauth.py); it ends with an `access-revoked` event saying why.
Neither final event has an id line: the client's last id stays where it was, to resume.
Streams with neither (public channels, the default policy) have no watch at all.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from typing import Any, Protocol

from events import metrics, reauth, sse
from events.conf import conf
from events.log import log_failure
from events.policy import denied_channels, depends_on_user

logger = logging.getLogger(__name__)

TOKEN_EXPIRED = "token-expired"


class Watched(Protocol):
    channels: tuple[str, ...]
    scope: Any

    @property
    def closed(self) -> bool: ...

    async def close_stream(self, *, final: bytes = b"", reason: metrics.CloseReason = "error") -> None: ...


class AccessWatch:
    __slots__ = ("stream", "_timer", "_task", "_revoking", "_session")

    def __init__(self, stream: Watched) -> None:
        self.stream = stream
        self._timer: asyncio.TimerHandle | None = None
        # The tasks that check or end the stream: referenced until they are done.
        self._task: asyncio.Task[None] | None = None
        self._revoking: asyncio.Task[None] | None = None
        self._session: str | None = None

    @classmethod
    def start(cls, stream: Watched, expires: int | None) -> AccessWatch | None:
        """The watch a stream that is now set up needs (armed only then, so that it never
        races the set-up): until `expires` (a token's grant, Unix time), or the session's
        checks; None when it needs none."""
        loop = asyncio.get_running_loop()
        if expires is not None:
            watch = cls(stream)
            watch._timer = loop.call_at(loop.time() + expires - time.time(), watch._expired)
            return watch
        if not depends_on_user(stream.channels):
            return None
        session = reauth.session_digest(stream.scope)
        if session is None:
            return None
        watch = cls(stream)
        watch._session = session
        reauth.track(stream, session)
        watch._arm_check()
        return watch

    @property
    def reads_scope(self) -> bool:
        """Whether it asks the policy again (with the stream's scope) while it runs; a
        token's watch only waits for its expiry."""
        return self._session is not None

    def stop(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._session is not None:
            reauth.untrack(self.stream, self._session)
            self._session = None

    def revoke(self, reason: str) -> None:
        if not self.stream.closed:
            self._revoking = asyncio.get_running_loop().create_task(self._end_revoked(reason))

    def _expired(self) -> None:
        self._timer = None
        if not self.stream.closed:
            logger.info("subscribe token of stream %s expired; ending it", self.stream.channels)
            data = sse.dumps({"channels": list(self.stream.channels)})
            self._task = asyncio.get_running_loop().create_task(
                self._end(sse.event_body(data, TOKEN_EXPIRED), "token_expired")
            )

    def _arm_check(self) -> None:
        # Spread over the last fifth of the interval: streams opened together (a
        # deploy's reconnect wave) are not all checked in the same instant.
        delay = conf.reauth_seconds * random.uniform(0.8, 1.0)
        self._timer = asyncio.get_running_loop().call_later(delay, self._check_due)

    def _check_due(self) -> None:
        self._timer = None
        if not self.stream.closed:
            self._task = asyncio.get_running_loop().create_task(self._check())

    async def _check(self) -> None:
        """Ask the read policy again, with the session as it is now."""
        try:
            denied = await denied_channels(self.stream.scope, self.stream.channels)
        except Exception as exc:
            # A database that is down does not end streams: try again next time.
            log_failure(logger, exc, "checking stream %s again failed", self.stream.channels)
            denied = []
        if self.stream.closed:
            return
        if denied:
            await self._end_revoked(f"no longer allowed to read channel {denied[0]!r}")
        else:
            self._arm_check()

    async def _end_revoked(self, reason: str) -> None:
        logger.info("stream %s: %s; ending it", self.stream.channels, reason)
        data = sse.dumps({"channels": list(self.stream.channels), "reason": reason})
        await self._end(sse.event_body(data, reauth.ACCESS_REVOKED), "access_revoked")

    async def _end(self, final: bytes, reason: metrics.CloseReason) -> None:
        try:
            await self.stream.close_stream(final=final, reason=reason)
        except Exception:
            logger.exception("ending stream %s (%s) failed", self.stream.channels, reason)
