"""Prometheus metrics: every definition, the helpers the code calls, and the exposition.

Aggregation across processes: Prometheus scrapes a host (one port), and any daphne
process behind it may answer. With PROMETHEUS_MULTIPROC_DIR set (prometheus_client's
multiprocess mode, chosen when prometheus_client is first imported), every process
writes its values to memory-mapped files in that directory, and the process that
answers GET /metrics adds up the files of all of them. Counters and histograms of
processes that have ended stay in the sum (totals never go backwards); gauges count
live processes only: a process removes its stale gauge files when it starts, and a
scrape removes those of processes that no longer exist (a SIGKILL leaves them behind).
Without the variable, a scrape sees the process that answers it, nothing more.

Labels are closed sets (close reasons, publish paths, HTTP statuses, reset reasons),
never a channel name: channels are unbounded.

Cost: the fan-out path touches no metric per stream. A stream adds the bytes it writes
to `tally` (a plain attribute), and the hub turns a whole fan-out into one counter
update (`delivered`); the tally reaches the counters when a stream's replay ends and
on every heartbeat tick, not once per event.
"""

from __future__ import annotations

import contextlib
import contextvars
import glob
import os
import re
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any, Literal, get_args

from django.core.exceptions import ImproperlyConfigured
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)

# prometheus_client's multiprocess helpers, typed here (it leaves them unannotated).
_mark_process_dead: Callable[[int, str], None] = multiprocess.mark_process_dead
_MultiProcessCollector: Callable[[CollectorRegistry, str], object] = multiprocess.MultiProcessCollector

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
# The directory of the multiprocess mode, or None (one process only).
MULTIPROC_DIR = os.environ.get(MULTIPROC_ENV) or None

PublishPath = Literal["python", "command", "http", "admin"]
CloseReason = Literal[
    "client_gone",  # the client closed the connection
    "slow_reader",  # too much queued for a client that does not read (or reads its replay too slowly)
    "fell_behind",  # too many live events held while the stream replayed
    "layer_lost",  # the channel layer (Redis) stopped answering
    "history_trimmed",  # events it still needed were trimmed from the store
    "token_expired",  # its subscribe token ran out
    "access_revoked",  # its session logged out, or the policy no longer lets it read
    "shutdown",  # the server stopped
    "error",  # a failure while setting the stream up
]
# The reasons of a stream-reset (events/resume.py plan_resume), as label values.
RESET_REASONS = {
    "malformed id": "malformed_id",
    "id does not cover this channel": "id_not_covering",
    "unknown id": "unknown_id",
    "id is older than the retained history": "older_than_history",
}
# Publish latency is a commit and a Redis round trip: a millisecond or two when well.
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
# Delivery lag also spans a layer that delivers late and a busy event loop.
LAG_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


def _prepare_directory() -> None:
    if MULTIPROC_DIR is None:
        return
    try:
        os.makedirs(MULTIPROC_DIR, exist_ok=True)
        if not os.access(MULTIPROC_DIR, os.W_OK | os.X_OK):
            raise PermissionError("not writable")
    except OSError as exc:
        raise ImproperlyConfigured(
            f"{MULTIPROC_ENV}={MULTIPROC_DIR!r} cannot hold the metrics files: {exc}"
        ) from None
    # A process that had our pid before us (and died without clean-up) left its live
    # gauges behind: ours would start from its values.
    _mark_process_dead(os.getpid(), MULTIPROC_DIR)


_prepare_directory()

STREAMS_OPEN = Gauge("events_streams_open", "Open SSE streams.", multiprocess_mode="livesum")
STREAMS_OPENED = Counter("events_streams_opened", "SSE streams opened (answered 200 and streaming).")
STREAMS_CLOSED = Counter("events_streams_closed", "SSE streams ended, by reason.", ["reason"])
STREAMS_REJECTED = Counter(
    "events_streams_rejected", "Stream requests refused before any stream byte, by HTTP status.", ["status"]
)
PUBLISHED = Counter(
    "events_published", "Events stored for publishing, by where they were sent from.", ["path"]
)
DELIVERIES = Counter("events_deliveries", "Live event frames handed to local streams by the fan-out.")
WRITTEN_BYTES = Counter("events_written_bytes", "Bytes written to streams (events, replays, heartbeats).")
REPLAYS = Counter("events_replays", "Streams that resumed by replaying stored events.")
REPLAYED = Counter("events_replayed_events", "Stored events written to resuming streams.")
STREAM_RESETS = Counter(
    "events_stream_resets", "Channels a stream-reset told a resuming client about, by reason.", ["reason"]
)
GAP_FILLS = Counter("events_gap_fills", "Gaps in a channel's seqs that a hub filled from the store.")
GAP_FILLED = Counter("events_gap_filled_events", "Events a hub delivered from the store to fill gaps.")
LAYER_LOST = Counter("events_layer_lost", "Times a hub found the channel layer lost (and ended its streams).")
HUBS = Gauge(
    "events_hubs",
    "Hubs (one per serving process), by channel layer state.",
    ["layer"],
    multiprocess_mode="livesum",
)
BROADCAST_FAILURES = Counter("events_broadcast_failures", "Broadcasts to the channel layer that failed.")
BREAKER_SKIPS = Counter(
    "events_broadcast_skips", "Broadcasts skipped because the channel layer failed moments before."
)
PUBLISH_LATENCY = Histogram(
    "events_publish_latency_seconds",
    "From the commit of an event to the end of its broadcast (seconds).",
    buckets=LATENCY_BUCKETS,
)
DELIVERY_LAG = Histogram(
    "events_delivery_lag_seconds",
    "From the publisher's broadcast after commit to the last local stream written, per event "
    "and process (seconds; across hosts, clock skew included).",
    buckets=LAG_BUCKETS,
)

# Children bound once: a labels() lookup costs a dict access and a lock per call.
_closed = {reason: STREAMS_CLOSED.labels(reason) for reason in get_args(CloseReason)}
_published = {path: PUBLISHED.labels(path) for path in get_args(PublishPath)}
_layer_up, _layer_down = HUBS.labels("up"), HUBS.labels("lost")
# Bound on first use (a series appears in the exposition once it has been counted).
_rejected: dict[int, Any] = {}
_resets: dict[str, Any] = {}


class Tally:
    """Counts taken on the hot path as plain integers, added to the counters in bulk.
    Only the event loop's thread touches it (streams and the hub)."""

    __slots__ = ("bytes", "replayed")

    def __init__(self) -> None:
        self.bytes = 0
        self.replayed = 0


tally = Tally()


def flush() -> None:
    """Add what the tally holds to the counters (the hub calls this regularly)."""
    if tally.bytes:
        written, tally.bytes = tally.bytes, 0
        WRITTEN_BYTES.inc(written)
    if tally.replayed:
        replayed, tally.replayed = tally.replayed, 0
        REPLAYED.inc(replayed)


# -- streams --------------------------------------------------------------------------


def stream_opened() -> None:
    STREAMS_OPENED.inc()
    STREAMS_OPEN.inc()


def stream_closed(reason: CloseReason) -> None:
    STREAMS_OPEN.dec()
    _closed[reason].inc()


def stream_rejected(status: int) -> None:
    child = _rejected.get(status)
    if child is None:
        child = _rejected[status] = STREAMS_REJECTED.labels(str(status))
    child.inc()


def resumed(resets: Iterable[str], replaying: bool) -> None:
    """A stream resumed: the reasons of its stream-reset, and whether it has stored
    events to replay (a resume at the head has none)."""
    for reason in resets:
        label = RESET_REASONS.get(reason, "other")
        child = _resets.get(label)
        if child is None:
            child = _resets[label] = STREAM_RESETS.labels(label)
        child.inc()
    if replaying:
        REPLAYS.inc()


# -- the hub --------------------------------------------------------------------------


def delivered(streams: int, committed_at: float | None) -> None:
    """One event fanned out to `streams` local streams; `committed_at` is the Unix time
    its publisher put in the message (for an event read from the store, when it was
    stored: events/sequencer.py)."""
    DELIVERIES.inc(streams)
    # From another process's message: anything but a number is no commit time.
    if isinstance(committed_at, (int, float)):
        # Clocks of two hosts may disagree by a little: never a negative lag.
        DELIVERY_LAG.observe(max(0.0, time.time() - committed_at))


def gap_filled(events: int) -> None:
    GAP_FILLS.inc()
    GAP_FILLED.inc(events)


def layer_state(up: bool, lost_now: bool = False) -> None:
    """The hub's view of its channel layer, after each liveness ping."""
    if lost_now:
        LAYER_LOST.inc()
    _layer_up.set(1 if up else 0)
    _layer_down.set(0 if up else 1)


def hub_stopped() -> None:
    _layer_up.set(0)
    _layer_down.set(0)


# -- publishing -----------------------------------------------------------------------

_publish_path: contextvars.ContextVar[PublishPath] = contextvars.ContextVar(
    "events_publish_path", default="python"
)


@contextlib.contextmanager
def publishing_via(path: PublishPath) -> Iterator[None]:
    """Events sent inside this block count as sent from `path` (default: python)."""
    token = _publish_path.set(path)
    try:
        yield
    finally:
        _publish_path.reset(token)


def published(count: int = 1) -> None:
    _published[_publish_path.get()].inc(count)


def broadcast_done(messages: Iterable[Any]) -> None:
    """A batch reached the layer: each message's time from its commit (the time the
    publisher put in it) to now."""
    now = time.time()
    for message in messages:
        committed_at = message.get("committed_at")
        if committed_at is not None:
            PUBLISH_LATENCY.observe(max(0.0, now - committed_at))


def broadcast_failed(count: int = 1) -> None:
    BROADCAST_FAILURES.inc(count)


def broadcast_skipped(count: int = 1) -> None:
    BREAKER_SKIPS.inc(count)


# -- exposition -----------------------------------------------------------------------

_PID_FILE = re.compile(r"gauge_live[a-z]+_(\d+)\.db$")


def _reap_dead_processes(directory: str) -> None:
    """Drop the live gauges of processes that are gone (killed without clean-up)."""
    pids = {
        int(m.group(1))
        for f in glob.glob(os.path.join(directory, "gauge_live*_*.db"))
        if (m := _PID_FILE.search(f))
    }
    for pid in pids:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            _mark_process_dead(pid, directory)
        except PermissionError:
            pass  # alive, under another user


def registry() -> Any:
    """The registry a scrape reads: every process's files, or this process alone.

    The tally is not flushed here: a scrape runs in a thread of its own, and the tally
    belongs to the event loop's thread (its figures reach the counters within a
    heartbeat tick)."""
    if MULTIPROC_DIR is None:
        return REGISTRY
    _reap_dead_processes(MULTIPROC_DIR)
    collected = CollectorRegistry()
    _MultiProcessCollector(collected, MULTIPROC_DIR)
    return collected


def exposition() -> tuple[bytes, str]:
    """The text format of every process's metrics, and its content type."""
    return generate_latest(registry()), CONTENT_TYPE_LATEST


def headline() -> dict[str, float]:
    """The figures the admin shows above the event log, for all processes together."""
    wanted = {
        "events_streams_open": "streams_open",
        "events_streams_opened_total": "streams_opened",
        "events_published_total": "published",
        "events_deliveries_total": "deliveries",
        "events_written_bytes_total": "written_bytes",
        "events_replays_total": "replays",
        "events_stream_resets_total": "stream_resets",
        "events_gap_fills_total": "gap_fills",
        "events_layer_lost_total": "layer_lost",
        "events_broadcast_failures_total": "broadcast_failures",
        "events_broadcast_skips_total": "broadcast_skips",
    }
    figures = dict.fromkeys(wanted.values(), 0.0)
    figures["hubs_lost"] = 0.0
    for family in registry().collect():
        for sample in family.samples:
            key = wanted.get(sample.name)
            if key is not None:
                figures[key] += sample.value
            elif sample.name == "events_hubs" and sample.labels.get("layer") == "lost":
                figures["hubs_lost"] += sample.value
    return figures
