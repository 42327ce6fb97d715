"""Streams a session authorised are authorised again (a read policy is
asked at connect only; README "Security model").

A stream is checked once, when it opens; a session can end or lose its rights while the
stream stays open for hours. So a stream whose channels depend on the session's user
is checked again at most EVENTS_REAUTH_SECONDS apart (events/access_watch.py arms the timer), and
at once when its session logs out: the `user_logged_out` receiver below tells every
process through the channel layer, and each hub hands the message to `logged_out`.
Such a stream ends with an `access-revoked` event saying why. Token streams keep their
own rule (they end at the token's expiry).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from typing import Any

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.conf import settings
from django.http.cookie import parse_cookie

logger = logging.getLogger(__name__)

ACCESS_REVOKED = "access-revoked"
LOGOUT_MESSAGE = "events.logout"
# Every hub listens on this group. Channel groups are "events.<channel>", so no channel
# name can collide with it.
CONTROL_GROUP = "events-control"
SEND_TIMEOUT_SECONDS = 2.0

# Open streams per session (by digest) in this process: the ones to end at logout.
_by_session: dict[str, set[Any]] = {}


def digest(session_key: str) -> str:
    """What identifies a session on the layer: never the key itself (a credential)."""
    return hashlib.sha256(session_key.encode()).hexdigest()


def session_digest(scope: dict[str, Any]) -> str | None:
    cookie = dict(scope.get("headers") or ()).get(b"cookie", b"").decode("latin-1")
    key = parse_cookie(cookie).get(settings.SESSION_COOKIE_NAME)
    return digest(key) if key else None


def track(stream: Any, session: str) -> None:
    _by_session.setdefault(session, set()).add(stream)


def untrack(stream: Any, session: str) -> None:
    streams = _by_session.get(session)
    if streams is not None:
        streams.discard(stream)
        if not streams:
            del _by_session[session]


def logged_out(session: Any) -> None:
    """A session logged out (in any process): end this process's streams it opened."""
    if not isinstance(session, str):
        return
    for stream in list(_by_session.get(session, ())):
        stream.revoke("the session has logged out")


async def _announce(message: dict[str, Any]) -> None:
    layer = get_channel_layer()
    if layer is not None:
        await asyncio.wait_for(layer.group_send(CONTROL_GROUP, message), SEND_TIMEOUT_SECONDS)


def on_user_logged_out(sender: Any, request: Any = None, **kwargs: Any) -> None:
    """The `user_logged_out` receiver (connected in apps.py). Sent before the session
    is flushed, so its key is still known here."""
    session = getattr(request, "session", None)
    key = getattr(session, "session_key", None)
    if not key:
        return
    try:
        async_to_sync(_announce)({"type": LOGOUT_MESSAGE, "session": digest(key)})
    except Exception as exc:
        # Logging out must not fail because Redis does: the periodic check still ends
        # the streams, within EVENTS_REAUTH_SECONDS.
        logger.warning("could not announce a logout to the streams: %r", exc)
