"""Signed, expiring subscribe tokens (README "Reading from another origin: subscribe tokens").

A token grants exactly the channels it names until it expires, to a client with no
session: a page on another origin, a mobile app. It is made server-side, by code that
has decided the client may read those channels:

    from events.tokens import make_token
    token = make_token(["user-42", "orders"], ttl=3600)
    # the client opens /events/?channel=user-42&channel=orders&token=<token>

Tokens are signed with SECRET_KEY under a salt of their own, so no other signed value
of the project (sessions, password reset links) can be passed off as one.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable
from typing import NamedTuple

from django.core import signing

from events.names import validate_channel

SALT = "events.tokens.subscribe"
DEFAULT_TTL_SECONDS = 3600
# Far longer than any request URL a server accepts: rejected before any crypto work.
MAX_TOKEN_LENGTH = 8192


class TokenError(Exception):
    """The token is malformed, tampered with or expired (the message says which)."""


def make_token(channels: Iterable[str], ttl: float = DEFAULT_TTL_SECONDS) -> str:
    """A token granting `channels` for `ttl` seconds."""
    names = sorted({validate_channel(name) for name in channels})
    if not names:
        raise ValueError("a subscribe token must name at least one channel")
    if not isinstance(ttl, int | float) or not math.isfinite(ttl) or ttl <= 0:
        raise ValueError(f"ttl must be a positive, finite number of seconds, not {ttl!r}")
    return signing.dumps({"c": names, "e": int(time.time() + ttl)}, salt=SALT, compress=True)


class Grant(NamedTuple):
    channels: frozenset[str]
    expires: int  # Unix time: a stream opened with the token ends then


def granted_channels(token: str) -> frozenset[str]:
    """The channels a valid token grants; TokenError otherwise."""
    return read_token(token).channels


def read_token(token: str) -> Grant:
    """What a valid token grants, and until when; TokenError otherwise."""
    if not token or len(token) > MAX_TOKEN_LENGTH:
        raise TokenError("malformed subscribe token")
    try:
        payload = signing.loads(token, salt=SALT)
    except signing.BadSignature as exc:
        raise TokenError("invalid subscribe token") from exc
    except Exception as exc:  # undecodable content under a valid signature cannot happen, but never 500
        raise TokenError("malformed subscribe token") from exc
    if (
        not isinstance(payload, dict)
        or not isinstance(payload.get("c"), list)
        or not isinstance(payload.get("e"), int)
    ):
        raise TokenError("malformed subscribe token")
    if payload["e"] < time.time():
        raise TokenError("subscribe token has expired")
    return Grant(frozenset(name for name in payload["c"] if isinstance(name, str)), payload["e"])
