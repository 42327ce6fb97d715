"""What a stream request asks for, checked before any work is done for it: pure, apart
from reading the settings.

parse_stream_request(scope) answers a StreamRequest or raises a Rejection (400): a Host
outside ALLOWED_HOSTS, a bad channel list, a resume id longer than any this server hands
out. The channel-list rules are the ones the feed page applies (events/views.py), from
channel_list_error() here.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl

from django.conf import settings
from django.http.request import split_domain_port, validate_host

from events.access import bearer_token
from events.conf import conf
from events.names import CHANNEL_MAX, channel_error
from events.rejection import Rejection

# An id is at most `<channel>:<19 digits>` per channel, joined by commas.
ID_BYTES_PER_CHANNEL = CHANNEL_MAX + 21
# What Django's HttpRequest.get_host() allows when DEBUG is on and ALLOWED_HOSTS empty.
DEBUG_HOSTS = [".localhost", "127.0.0.1", "[::1]"]
NO_CHANNEL = "no channel requested: use /events/<channel>/ or /events/?channel=<name>"


@dataclass(frozen=True, slots=True)
class StreamRequest:
    channels: tuple[str, ...]
    resume: str  # the client's last event id; "" for none
    token: str | None  # a subscribe token, from the query or an Authorization header
    origin: str | None
    client: str | None  # the client's address, for the per-client limits
    head: bool


def channel_list_error(names: Sequence[str]) -> str | None:
    """Why a stream may not read this list of channels, or None (the list is not empty)."""
    limit = conf.max_channels_per_stream
    if len(names) > limit:
        return f"{len(names)} channels requested; at most {limit} per stream"
    for name in names:
        error = channel_error(name)
        if error:
            return error
    return None


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


def client_address(scope: dict[str, Any]) -> str | None:
    """The client's address, which the per-client limits count by (events/admission.py)."""
    client = scope.get("client")
    return str(client[0]) if client else None


def parse_stream_request(scope: dict[str, Any]) -> StreamRequest:
    """The request a stream serves, or Rejection(400) saying what is wrong with it."""
    # Undecodable bytes become U+FFFD, which no valid name contains: a 400 below.
    query = parse_qsl(
        scope.get("query_string", b"").decode("latin-1"), keep_blank_values=True, errors="replace"
    )
    headers = {name.lower(): value for name, value in scope.get("headers", [])}
    bad_host = host_error(scope, headers)
    if bad_host:
        raise Rejection(400, bad_host)
    path_channel = scope.get("url_route", {}).get("kwargs", {}).get("channel")
    # dict.fromkeys: drop repeats, keep the order given.
    names = [path_channel] if path_channel else list(dict.fromkeys(v for k, v in query if k == "channel"))
    problem = channel_list_error(names) if names else NO_CHANNEL
    if problem:
        raise Rejection(400, problem)
    resume = headers.get(b"last-event-id", b"").decode("latin-1") or next(
        (value for key, value in query if key == "last_event_id"), ""
    )
    if len(resume) > ID_BYTES_PER_CHANNEL * conf.max_channels_per_stream:
        raise Rejection(400, "Last-Event-ID is longer than any id this server hands out")
    # A header, from clients that can send one (fetch-based SSE, apps), keeps the token
    # out of URLs and so out of access logs.
    token = next((value for key, value in query if key == "token"), None)
    if token is None:
        token = bearer_token(headers.get(b"authorization", b"").decode("latin-1"))
    origin = headers.get(b"origin")
    return StreamRequest(
        channels=tuple(names),
        resume=resume,
        token=token,
        origin=origin.decode("latin-1") if origin else None,
        client=client_address(scope),
        head=scope.get("method") == "HEAD",
    )
