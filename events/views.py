"""Django views: the HTTP publish endpoint, the feed page, /metrics and /healthz."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable
from typing import Any

from channels.db import database_sync_to_async
from django.conf import settings
from django.core.exceptions import RequestDataTooBig, TooManyFieldsSent
from django.core.handlers.wsgi import WSGIRequest
from django.db.utils import Error as DatabaseError
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.middleware.csrf import CsrfViewMiddleware
from django.shortcuts import render
from django.views import defaults
from django.views.decorators.csrf import csrf_exempt

from events import access, cors, metrics, presence, redis_clients, rejection
from events.conf import conf
from events.hub import get_hub
from events.log import describe
from events.names import channel_error, event_type_error
from events.policy import channel_publish_denied, staff_publish_denied
from events.positions import format_position
from events.publish import prepare_item, prepare_items, send_prepared
from events.shell import python_command
from events.stream_request import channel_list_error

logger = logging.getLogger(__name__)

PUBLISH_METHODS = "POST, OPTIONS"
HEALTH_TIMEOUT_SECONDS = 2.0
# Seconds a publisher is told to wait when the database is down.
PUBLISH_RETRY_AFTER = "5"
# The feed page listens for this many event types at most (EventSource needs a listener per name).
FEED_MAX_TYPES = 200


def error(status: int, reason: str, **headers: str) -> JsonResponse:
    """A refusal: the JSON body every refusal of the product has (events/rejection.py)."""
    response = JsonResponse(rejection.payload(reason), status=status)
    for name, value in headers.items():
        response[name.replace("_", "-")] = value
    return response


def _with_cors(request: HttpRequest, response: HttpResponse, preflight: bool = False) -> HttpResponse:
    origin = request.headers.get("Origin")
    headers = cors.preflight_for(origin, PUBLISH_METHODS) if preflight else cors.headers_for(origin)
    for name, value in headers:
        response[name.decode()] = value.decode("latin-1")
    return response


def _bearer_token(request: HttpRequest) -> str | None:
    return access.bearer_token(request.headers.get("Authorization", ""))


def _csrf_protected_view(request: HttpRequest) -> HttpResponse:
    # What CsrfViewMiddleware is asked about: a view that is not csrf_exempt.
    return HttpResponse()


def _authorise(request: HttpRequest, channel: str) -> JsonResponse | None:
    """None when the request may publish, else the 401/403 answer (README "Publishing
    over HTTP")."""
    token = _bearer_token(request)
    if token is not None:
        valid = access.secret_matches(token, conf.publish_token)
        return None if valid else error(403, "invalid publish token")
    user = getattr(request, "user", None)
    if user is None or not user.is_authenticated:
        return error(
            401,
            "authentication required: a staff session or 'Authorization: Bearer <token>'",
            WWW_Authenticate='Bearer realm="events"',
        )
    denied = staff_publish_denied(user)
    if denied is not None:
        return error(403, denied)
    # A session is ambient authority: demand the CSRF token, as Django does for forms.
    reason = CsrfViewMiddleware(lambda r: HttpResponse()).process_view(request, _csrf_protected_view, (), {})
    if reason is not None:
        return error(403, "CSRF verification failed: send the X-CSRFToken header")
    # As the admin asks: staff with the add permission, and the publish policy (for a
    # list, POST /events/, per channel of the list: _publish_batch).
    denied = channel_publish_denied(user, channel) if channel else None
    if denied is not None:
        return error(403, denied)
    return None


def streams_not_routed(request: HttpRequest) -> JsonResponse:
    """The answer to a GET on /events/... that reached Django's views: the project
    serves Django without events.asgi.with_streams, or serves it over WSGI."""
    how = (
        "this request came through WSGI: serve the project with daphne (an ASGI server)"
        if isinstance(request, WSGIRequest)
        else "the project's ASGI application does not route streams"
    )
    logger.error("GET %s reached Django's views: %s", request.path, how)
    return error(
        500,
        f"streams are not served here: {how}. In asgi.py: "
        "application = with_streams(get_asgi_application()), "
        "with `from events.asgi import with_streams` (README: Add to your Django project)",
    )


def _is_json(content_type: str | None) -> bool:
    """application/json or a +json type; no Content-Type at all is taken as JSON too."""
    kind = (content_type or "").strip().lower()
    return kind in ("", "application/json") or (kind.startswith("application/") and kind.endswith("+json"))


BATCH_SHAPE = '[{"channel": "name", "event": "type", "data": ...}, ...]'


@csrf_exempt  # checked in _authorise, and only for session-authenticated requests
def publish(request: HttpRequest, channel: str = "") -> HttpResponse:
    """POST /events/<channel>/ publishes one event; POST /events/ a list of events."""
    try:
        return _publish(request, channel)
    except DatabaseError:
        # The events cannot be stored, so none is sent: the publisher should retry.
        # (Django logs the 503 in one line; the traceback says nothing more.)
        return _with_cors(
            request,
            error(503, "the database is unavailable; nothing was published", Retry_After=PUBLISH_RETRY_AFTER),
        )


def _publish(request: HttpRequest, channel: str) -> HttpResponse:
    if request.method == "OPTIONS":
        return _with_cors(request, HttpResponse(status=204), preflight=True)
    if request.method in ("GET", "HEAD"):
        # A stream request that reached Django: nothing routed it to the SSE consumer.
        return _with_cors(request, streams_not_routed(request))
    if request.method != "POST":
        return _with_cors(
            request, error(405, f"{request.method} is not allowed here", Allow="GET, POST, OPTIONS")
        )
    problem = channel_error(channel) if channel else None
    if problem:
        return _with_cors(request, error(400, problem))
    denied = _authorise(request, channel)
    if denied is not None:
        return _with_cors(request, denied)
    if not _is_json(request.content_type):
        # A form body (multipart, urlencoded) has been read as a form by then (the CSRF
        # check does), and it is never an event anyway.
        return _with_cors(
            request,
            error(415, f"the body must be JSON (Content-Type: application/json), not {request.content_type}"),
        )
    try:
        body = json.loads(request.body)
    except RequestDataTooBig:
        return _with_cors(request, error(413, "the body is larger than the server accepts"))
    except (ValueError, UnicodeDecodeError, RecursionError):
        return _with_cors(request, error(400, "the body is not valid JSON"))
    answer = _publish_one(channel, body) if channel else _publish_batch(request, body)
    return _with_cors(request, answer)


def _publish_one(channel: str, body: Any) -> JsonResponse:
    if not isinstance(body, dict):
        return error(400, 'the body must be a JSON object: {"event": "type", "data": ...}')
    if "channel" in body:  # the URL names it
        return error(400, f"unknown field(s): {', '.join(sorted(set(body) - {'event', 'data', 'text'}))}")
    # "data": any JSON value, sent as JSON; "text": a string sent as is (raw).
    try:
        prepared = prepare_item({**body, "channel": channel})
    except ValueError as exc:
        return error(400, str(exc))
    with metrics.publishing_via("http"):
        (event,) = send_prepared([prepared])
    return JsonResponse({"id": event.sse_id}, status=201)


def _publish_batch(request: HttpRequest, body: Any) -> JsonResponse:
    """A list of events, stored in one transaction and broadcast in one round trip; all or
    nothing: one bad element is a 400 naming it (a channel a session may not publish to,
    a 403), and nothing is stored."""
    if not isinstance(body, list):
        return error(
            400, f"POST /events/ takes a JSON list of events: {BATCH_SHAPE} (or POST /events/<channel>/)"
        )
    if not body:
        return error(400, f"the list is empty: {BATCH_SHAPE}")
    limit = conf.max_batch
    if len(body) > limit:
        return error(400, f"{len(body)} events in one request, over the limit of {limit}")
    try:
        prepared = prepare_items(body)
    except ValueError as exc:
        return error(400, str(exc))
    if _bearer_token(request) is None:
        # A staff session (checked by _authorise): the publish policy for every channel
        # of the list, as for one.
        for name in dict.fromkeys(item[0] for item in prepared):
            denied = channel_publish_denied(request.user, name)
            if denied is not None:
                return error(403, denied)
    with metrics.publishing_via("http"):
        events = send_prepared(prepared)
    return JsonResponse({"ids": [event.sse_id for event in events]}, status=201)


def _feed_channels(request: HttpRequest) -> list[str] | JsonResponse:
    """The page's channels (default `public`), or the 400 answer for bad ones."""
    try:
        requested = request.GET.getlist("channel")
    except TooManyFieldsSent:
        return error(400, "too many query parameters")
    channels = list(dict.fromkeys(requested)) or ["public"]
    problem = channel_list_error(channels)  # the stream's own rules: it would answer the same
    return error(400, problem) if problem else channels


def _unreadable(request: HttpRequest, channels: list[str]) -> list[str] | JsonResponse:
    """The channels the read policy refuses to this user (the stream would answer 403),
    or the 503 answer when a (custom) policy raises, as the stream gives."""
    try:
        return access.unreadable(request.user, channels)
    except Exception:
        logger.exception("the channel policy failed for %s", channels)
        return error(503, "the server could not check this request; try again")


def _feed_access(request: HttpRequest) -> tuple[list[str], list[str]] | JsonResponse:
    """The page's channels and those the read policy refuses to this user, or the 400 or
    503 answer."""
    channels = _feed_channels(request)
    if isinstance(channels, JsonResponse):
        return channels
    denied = _unreadable(request, channels)
    return denied if isinstance(denied, JsonResponse) else (channels, denied)


def _known_types(channels: list[str], extra: list[str]) -> list[str]:
    from events.models import Event

    # order_by(): the model's default ordering would otherwise join the DISTINCT.
    known = (
        Event.objects.filter(channel__in=channels).order_by("type").values_list("type", flat=True).distinct()
    )
    wanted = [name for name in extra if not event_type_error(name)]
    return sorted({*known[:FEED_MAX_TYPES], *wanted[:FEED_MAX_TYPES]})


def feed(request: HttpRequest) -> HttpResponse:
    """The live feed page: /feed/?channel=a&channel=b (events/static/events/feed.js)."""
    checked = _feed_access(request)
    if isinstance(checked, JsonResponse):
        return checked
    channels, denied = checked
    context: dict[str, Any] = {
        "channels": channels,
        "denied": denied,
        "types": [],
        "position": "",
        # How to send a first event from a shell: for whoever runs the server, not for
        # the public (the page is readable by anyone who may read its channels).
        "operator_hints": settings.DEBUG,
        "python": python_command() if settings.DEBUG else "",
    }
    if denied:
        return _with_csp(render(request, "events/feed.html", context, status=403))
    from events import store

    context["types"] = _known_types(channels, request.GET.getlist("type"))
    # The stream starts from the position the page was rendered at (?last_event_id=),
    # so events published while the page loads are not missed, and the page knows
    # every channel's seq from the start: with several channels it tells which one
    # an event belongs to by the seq that moved (events/positions.py).
    context["position"] = format_position(store.last_seqs(channels), channels)
    context["config"] = {key: context[key] for key in ("channels", "types", "position")}
    return _with_csp(render(request, "events/feed.html", context))


# The feed page runs only its own scripts and styles, and streams from this origin.
FEED_CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; worker-src 'self'; object-src 'none'; base-uri 'none'; "
    "form-action 'self'; frame-ancestors 'none'"
)


def _with_csp(response: HttpResponse) -> HttpResponse:
    response["Content-Security-Policy"] = FEED_CSP
    return response


def feed_types(request: HttpRequest) -> HttpResponse:
    """GET /feed/types/?channel=a: the event types these channels have used.

    EventSource hands named events only to listeners registered per name; the feed
    asks here when a seq gap shows it skipped events of a type it did not know.
    """
    checked = _feed_access(request)
    if isinstance(checked, JsonResponse):
        return checked
    channels, denied = checked
    if denied:
        return error(403, access.not_readable(denied[0]))
    return JsonResponse({"types": _known_types(channels, [])})


def presence_counts(request: HttpRequest) -> HttpResponse:
    """GET /presence/: open streams per channel across all processes (staff only)."""
    if request.method not in ("GET", "HEAD"):
        return error(405, f"{request.method} is not allowed here", Allow="GET, HEAD")
    user = request.user
    # JSON, never the login page: this is read by scripts and dashboards.
    if not user.is_authenticated:
        return error(403, "authentication required: log in as a staff user")
    if not (user.is_active and user.is_staff):
        return error(403, "only staff users may see subscriber counts")
    try:
        counts = presence.counts()
    except presence.PresenceUnavailable as exc:
        return error(503, str(exc))
    return JsonResponse({**counts, "ttl_seconds": conf.presence_ttl_seconds})


def _may_read_metrics(request: HttpRequest) -> JsonResponse | None:
    """None when the request may read /metrics, else the 403 answer."""
    token = _bearer_token(request)
    if token is not None:
        valid = access.secret_matches(token, conf.metrics_token)
        return None if valid else error(403, "invalid metrics token")
    user = request.user
    if not (user.is_authenticated and user.is_active and user.is_staff):
        return error(403, "staff session or 'Authorization: Bearer <EVENTS_METRICS_TOKEN>' required")
    return None


def metrics_endpoint(request: HttpRequest) -> HttpResponse:
    """GET /metrics: Prometheus' text format, every process of this host together."""
    if request.method not in ("GET", "HEAD"):
        return error(405, f"{request.method} is not allowed here", Allow="GET, HEAD")
    denied = _may_read_metrics(request)
    if denied is not None:
        return denied
    body, content_type = metrics.exposition()
    return HttpResponse(body, content_type=content_type)


# The health checks failing at the last probe (each change is logged once).
_failing_checks: set[str] = set()


async def healthz(request: HttpRequest) -> HttpResponse:
    """200 when the database answers and this process's hub receives through the
    channel layer, else 503; staff are told which check failed."""
    checks: dict[str, str] = {}

    def database() -> None:
        from events.models import Channel

        # The store's own table, not only a connection: a database that answers but
        # lost its tables (a wrong or missing SQLite file) cannot serve streams either.
        Channel.objects.filter(pk="").exists()

    async def layer() -> None:
        # A round trip through the subscription this process's streams are fed from,
        # not only a fresh connection: after a Redis restart the latter works at once,
        # the former only once the subscription is back.
        await get_hub().probe(HEALTH_TIMEOUT_SECONDS)

    probes = [("database", database_sync_to_async(database)), ("channel_layer", layer)]
    if len(redis_clients.layer_hosts()) > 1:
        # The layer probe above reaches one shard; each shard carries its share of the
        # channels, so each must answer (with the layer's own connection settings).
        probes.append(("redis_shards", redis_clients.ping_every_host))
    for name, probe in probes:
        try:
            await asyncio.wait_for(probe(), HEALTH_TIMEOUT_SECONDS)
            checks[name] = "ok"
        except Exception as exc:
            checks[name] = f"failed: {type(exc).__name__}"
            # Logged when a check starts failing, not at each probe (a load balancer
            # asks every few seconds).
            if name not in _failing_checks:
                _failing_checks.add(name)
                logger.warning("health check %s failed: %s", name, describe(exc))
        else:
            if name in _failing_checks:
                _failing_checks.discard(name)
                logger.warning("health check %s passes again", name)
    ok = all(value == "ok" for value in checks.values())
    body = {"status": "ok" if ok else "unavailable"}
    # What failed, and how, is for operators: staff see it here, everyone sees the log.
    try:
        user = await request.auser()
    except DatabaseError:
        user = None  # the session is in the database that is down: no details
    if user is not None and user.is_active and user.is_staff:
        body.update(checks)
    return JsonResponse(body, status=200 if ok else 503)


# Error pages: JSON for the product's own endpoints, Django's usual pages elsewhere.
JSON_PATH_PREFIXES = ("/events/", "/presence/", "/healthz", "/feed/types/", "/metrics")


def _json_or_default(
    status: int, reason: str, default: Callable[..., HttpResponse]
) -> Callable[..., HttpResponse]:
    def handler(request: HttpRequest, exception: Exception | None = None) -> HttpResponse:
        if request.path.startswith(JSON_PATH_PREFIXES):
            return error(status, reason)
        return default(request, exception) if status != 500 else default(request)

    return handler


json_bad_request = _json_or_default(400, "bad request", defaults.bad_request)
json_permission_denied = _json_or_default(403, "forbidden", defaults.permission_denied)
json_page_not_found = _json_or_default(404, "not found", defaults.page_not_found)
json_server_error = _json_or_default(500, "internal error", defaults.server_error)
