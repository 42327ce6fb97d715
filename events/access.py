"""Who may read a set of channels: a subscribe token, else the read policy. The one
place the stream (events/consumers.py) and the views (events/views.py) ask.

A subscribe token grants exactly the channels it names until it expires (the stream then
ends at that time); without one the read policy (events/policy.py) decides, and the
session may be checked again while the stream is open (events/reauth.py). The bearer
tokens of the publish endpoint and /metrics are compared here too.
"""

from __future__ import annotations

import hmac
from collections.abc import Iterable, Sequence
from typing import Any

from events.policy import denied_channels, load_policy
from events.rejection import Rejection
from events.tokens import TokenError, read_token


def bearer_token(authorization: str) -> str | None:
    """The token of an `Authorization: Bearer <token>` header, or None."""
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


def secret_matches(token: str, expected: str) -> bool:
    """Whether a bearer token is the configured secret ("" configures none)."""
    # compare_digest: the time taken does not tell how much of the token matched.
    return bool(expected) and hmac.compare_digest(token.encode(), expected.encode())


def not_readable(channel: str) -> str:
    return f"not allowed to read channel {channel!r}"


def grant_expiry(token: str, channels: Iterable[str]) -> int:
    """The Unix time the token's grant of all `channels` ends; Rejection(403) when it is
    invalid, expired, or does not name every one of them."""
    try:
        grant = read_token(token)
    except TokenError as exc:
        raise Rejection(403, str(exc)) from exc
    outside = [name for name in channels if name not in grant.channels]
    if outside:
        raise Rejection(403, f"the subscribe token does not grant channel {outside[0]!r}")
    return grant.expires


async def authorise_read(scope: dict[str, Any], channels: Sequence[str], token: str | None) -> int | None:
    """May this request read `channels`? The token's expiry (the grant lasts until then,
    not for as long as the connection does), None for a read the policy allowed, or
    Rejection(403)."""
    if token is not None:
        return grant_expiry(token, channels)
    denied = await denied_channels(scope, channels)
    if denied:
        raise Rejection(403, not_readable(denied[0]))
    return None


def unreadable(user: Any, channels: Iterable[str]) -> list[str]:
    """The channels the read policy refuses to `user` (a page's request, in its thread)."""
    policy = load_policy()
    return [name for name in channels if not policy(user, name)]
