"""Who may read which channel, and which user may publish where (README "Security model").

EVENTS_CHANNEL_POLICY names a callable `(user, channel) -> bool`. The default:
`user-<pk>` only for that logged-in user, `private-*` only for active staff, every other
channel for anyone.

EVENTS_PUBLISH_POLICY names a callable `(user, channel) -> bool` asked when a user (a
session: the HTTP endpoint, the admin) publishes; a user must be active staff with the
`events.add_event` permission first. The default: `user-*` and `private-*` only for
superusers, other channels for every such user. The bearer token is not a user and is
not asked about.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable
from importlib import import_module
from types import SimpleNamespace
from typing import Any, cast

from django.conf import settings
from django.contrib import auth
from django.http import HttpRequest
from django.http.cookie import parse_cookie
from django.utils.functional import SimpleLazyObject
from django.utils.module_loading import import_string

from events.conf import DEFAULTS, conf
from events.db import stream_db

Policy = Callable[[Any, str], bool]


def default_policy(user: Any, channel: str) -> bool:
    if channel.startswith("user-"):
        return bool(user.is_authenticated) and channel == f"user-{user.pk}"
    if channel.startswith("private-"):
        return bool(user.is_authenticated and user.is_active and user.is_staff)
    return True


def default_publish_policy(user: Any, channel: str) -> bool:
    if channel.startswith(("user-", "private-")):
        return bool(user.is_superuser)
    return True


def publish_denied(user: Any, channel: str) -> str | None:
    """Why `user` may not publish to `channel`, or None when it may."""
    return staff_publish_denied(user) or channel_publish_denied(user, channel)


def staff_publish_denied(user: Any) -> str | None:
    """Why `user` may not publish at all (active staff with events.add_event may), or None."""
    if not (user.is_authenticated and user.is_active and user.is_staff):
        return "only staff users may publish"
    if not user.has_perm("events.add_event"):
        return "publishing needs the events.add_event permission"
    return None


def channel_publish_denied(user: Any, channel: str) -> str | None:
    """The publish policy's answer for a user who may publish (staff_publish_denied)."""
    if not _publish_policy(conf.publish_policy)(user, channel):
        return f"not allowed to publish to channel {channel!r}"
    return None


@functools.lru_cache(maxsize=8)
def _publish_policy(path: str) -> Policy:
    # Imported once per setting's value, not per request (tests override the setting).
    policy: Policy = import_string(path)
    return policy


def _needs_user_by_default(channel: str) -> bool:
    return channel.startswith(("user-", "private-"))


def depends_on_user(channels: Iterable[str]) -> bool:
    """Whether reading these channels may change when the session's user does (and so
    must be checked again while the stream is open): with the default policy only
    user-* and private-* do; a custom policy may look at anything."""
    if conf.channel_policy != DEFAULTS["EVENTS_CHANNEL_POLICY"]:
        return True
    return any(_needs_user_by_default(name) for name in channels)


def load_policy() -> Policy:
    policy: Policy = import_string(conf.channel_policy)
    return policy


async def denied_channels(scope: dict[str, Any], channels: Iterable[str]) -> list[str]:
    """The channels of `channels` that the request's user may not read."""
    names = list(channels)
    if conf.channel_policy == DEFAULTS["EVENTS_CHANNEL_POLICY"]:
        # Only user-* and private-* need the user: public streams skip the session
        # lookup, which matters when thousands of browsers connect at once.
        if not any(_needs_user_by_default(name) for name in names):
            return []
        user = await _get_user(scope)
        return [name for name in names if not default_policy(user, name)]
    denied: list[str] = await _denied_by(load_policy(), scope, names)
    return denied


def _sync_denied_by(policy: Policy, scope: dict[str, Any], names: list[str]) -> list[str]:
    # The user is loaded on first use, inside the worker thread.
    user = SimpleLazyObject(lambda: _sync_get_user(scope))
    return [name for name in names if not policy(user, name)]


def _sync_get_user(scope: dict[str, Any]) -> Any:
    """The session's user (AnonymousUser if none), loaded in the calling thread: the
    streams' database threads (events/db.py), not the process's single sync thread.
    Django's get_user() reads only `request.session`."""
    request = SimpleNamespace(session=with_session(scope)["session"])
    return auth.get_user(cast(HttpRequest, request))


# Bound once: each wrapper runs its function on the streams' database threads.
_get_user = stream_db(_sync_get_user)
_denied_by = stream_db(_sync_denied_by)


def with_session(scope: dict[str, Any]) -> dict[str, Any]:
    """The scope with the request's Django session (what channels' SessionMiddleware
    would add), made only here, when a channel's policy needs the user.

    Streams are not wrapped in the session middleware stack: for a stream that only
    reads public channels it would build a session store, two scope copies and a send
    wrapper, and keep them for the life of the connection (what that costs per open
    stream: ARCHITECTURE.md, "Performance notes"). The store reads the database only
    when the user is looked up."""
    if "session" in scope:
        return scope
    cookie = dict(scope.get("headers") or ()).get(b"cookie", b"").decode("latin-1")
    session_key = parse_cookie(cookie).get(settings.SESSION_COOKIE_NAME)
    engine = import_module(settings.SESSION_ENGINE)
    return {**scope, "session": engine.SessionStore(session_key)}
