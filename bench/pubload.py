"""One publishing case, measured in its own process; prints one JSON line.

    python -m bench.pubload SYSTEM CASE COUNT [BATCH] [CONCURRENCY]
    python -m bench.pubload listen CHANNEL   (the subscriber, started by the above)

SYSTEM is `ours` (events.*, the project's virtualenv, the database of DATABASE_URL),
`eventstream` (django_eventstream.send_event with its DjangoModelStorage) or
`eventstream-nostore` (its send_event without storage: its Redis publish alone), both
in the benchmark's virtualenv. CASE is `send_event`, `asend_event` (CONCURRENCY
coroutines) or `send_events` (lists of BATCH events; ours only).

COUNT events go to one fresh channel, after a warm-up on another (connections,
imports and prepared statements are not timed). Measured: events per second from the
first call until the last event is broadcast (ours: the publisher thread's queue is
empty), and each call's duration. For ours, a Redis subscriber on the channel's group
(a process of its own) counts what reached the layer: lost, duplicated, and the time
from a call's start to the event's arrival there (p50/p99).
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

from bench.run import SERVER_CPU, pinned

# Events before the timed ones: connections, prepared statements, a new table's first pages.
WARMUP = 200


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


class Subscriber:
    """The Redis channel behind our layer's group for `channel`, read by a process of its
    own (`python -m bench.pubload listen CHANNEL`): a reader in the publisher's process
    would take its share of the publisher's interpreter, which django-eventstream's
    rows, read by nobody, do not pay."""

    def __init__(self, channel: str) -> None:
        # Pinned to the server's CPU (only Redis is there in this section), so that the
        # publisher has the client's CPU to itself, as django-eventstream's does.
        self.process = subprocess.Popen(
            pinned(SERVER_CPU, [sys.executable, "-m", "bench.pubload", "listen", channel]),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.process.stdout is not None and self.process.stdin is not None
        if self.process.stdout.readline().strip() != "subscribed":
            raise SystemExit("the subscriber process did not start")
        self.arrivals: list[tuple[int, float, float]] = []  # (n, t sent, t arrived)

    def wait(self, count: int, timeout: float) -> None:
        """Until `count` events have arrived (or `timeout`), then what arrived."""
        try:
            out, _ = self.process.communicate(
                json.dumps({"count": count, "timeout": timeout}) + "\n", timeout=timeout + 30
            )
        finally:
            if self.process.poll() is None:
                self.process.kill()
                self.process.wait()
        self.arrivals = [tuple(row) for row in json.loads(out)]


def listen(channel: str) -> None:
    """The subscriber process: arrivals on the channel's group until the parent says how
    many to wait for (a JSON line on stdin), then all of them as one JSON list."""
    import redis
    from channels.layers import get_channel_layer
    from django.conf import settings

    from events.messages import group_name

    config = settings.CHANNEL_LAYERS["default"]["CONFIG"]
    layer = get_channel_layer()
    client = redis.Redis.from_url(config["hosts"][0])
    pubsub = client.pubsub()
    pubsub.subscribe(f"{config['prefix']}__group__{group_name(channel)}")
    # Redis has confirmed the subscription before the parent publishes anything.
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        confirmed = pubsub.get_message(timeout=1.0)
        if confirmed and confirmed["type"] == "subscribe":
            break
    arrivals: list[tuple[int, float, float]] = []
    told: dict[str, float] = {}

    def read_stdin() -> None:
        line = sys.stdin.readline()
        # End of input without a line: the parent is gone; stop at once.
        told.update(json.loads(line) if line else {"count": 0, "timeout": 0})

    threading.Thread(target=read_stdin, daemon=True).start()
    print("subscribed", flush=True)
    deadline: float | None = None
    while True:
        message = pubsub.get_message(timeout=0.05)
        if message and message["type"] == "message":
            arrived = time.monotonic()
            payload = json.loads(layer.deserialize(message["data"])["data"])
            arrivals.append((payload["n"], payload["t"], arrived))
        if told and deadline is None:
            deadline = time.monotonic() + told["timeout"]
        if deadline is not None and (len(arrivals) >= told["count"] or time.monotonic() > deadline):
            break
    # A duplicate would arrive right behind.
    settle = time.monotonic() + 0.2
    while time.monotonic() < settle:
        message = pubsub.get_message(timeout=0.05)
        if message and message["type"] == "message":
            payload = json.loads(layer.deserialize(message["data"])["data"])
            arrivals.append((payload["n"], payload["t"], time.monotonic()))
    pubsub.close()
    client.close()
    print(json.dumps(arrivals), flush=True)


def setup(system: str) -> None:
    os.environ["DJANGO_SETTINGS_MODULE"] = (
        "bench.ours_settings" if system == "ours" else "bench.peer_site.settings"
    )
    if system == "eventstream-nostore":
        os.environ["PEER_NO_STORAGE"] = "1"
    import django

    django.setup()


def sync_sender(system: str, case: str, batch: int) -> tuple[Callable[[str, int, float], Any], int]:
    """(send(channel, n, t), events per call)."""
    if system == "ours":
        from events import send_event, send_events

        if case == "send_events":

            def send_list(channel: str, n: int, t: float) -> Any:
                return send_events([{"channel": channel, "data": {"n": n + i, "t": t}} for i in range(batch)])

            return send_list, batch
        return (lambda channel, n, t: send_event(channel, {"n": n, "t": t})), 1
    from django_eventstream import send_event as peer_send_event

    return (lambda channel, n, t: peer_send_event(channel, "message", {"n": n, "t": t})), 1


def run_sync(system: str, case: str, count: int, batch: int, channel: str) -> tuple[float, list[float]]:
    send, per_call = sync_sender(system, case, batch)
    for n in range(0, WARMUP, per_call):
        send(f"{channel}-warmup", n, time.monotonic())
    flush()
    calls: list[float] = []
    started = time.monotonic()
    for n in range(0, count, per_call):
        t = time.monotonic()
        send(channel, n, t)
        calls.append(time.monotonic() - t)
    flush()
    return time.monotonic() - started, calls


def run_async(count: int, concurrency: int, channel: str) -> tuple[float, list[float]]:
    from events import asend_event

    calls: list[float] = []

    async def publisher(first: int, how_many: int, name: str, record: bool) -> None:
        for n in range(first, first + how_many):
            t = time.monotonic()
            await asend_event(name, {"n": n, "t": t})
            if record:
                calls.append(time.monotonic() - t)

    async def main() -> float:
        await publisher(0, WARMUP, f"{channel}-warmup", False)
        await asyncio.to_thread(flush)
        each = count // concurrency
        started = time.monotonic()
        await asyncio.gather(*(publisher(k * each, each, channel, True) for k in range(concurrency)))
        await asyncio.to_thread(flush)
        return time.monotonic() - started

    return asyncio.run(main()), calls


def flush() -> None:
    try:
        from events import broadcaster
    except ImportError:  # django-eventstream: its send_event returns after its publish
        return
    broadcaster.flush()


def main() -> None:
    if sys.argv[1] == "listen":
        setup("ours")
        listen(sys.argv[2])
        return
    system, case, count = sys.argv[1], sys.argv[2], int(sys.argv[3])
    batch = int(sys.argv[4]) if len(sys.argv) > 4 else 1
    concurrency = int(sys.argv[5]) if len(sys.argv) > 5 else 1
    setup(system)
    channel = f"pub-{uuid.uuid4().hex[:10]}"
    subscriber = Subscriber(channel) if system == "ours" else None
    if case == "asend_event":
        seconds, calls = run_async(count, concurrency, channel)
        count = count // concurrency * concurrency
    else:
        seconds, calls = run_sync(system, case, count, batch, channel)
        count = len(calls) * (batch if case == "send_events" else 1)
    result: dict[str, Any] = {
        "system": system,
        "case": case,
        "batch": batch,
        "concurrency": concurrency,
        "count": count,
        "seconds": seconds,
        "events_per_second": count / seconds,
        "call_ms": {"p50": percentile(calls, 0.5) * 1000, "p99": percentile(calls, 0.99) * 1000},
    }
    if subscriber is not None:
        subscriber.wait(count, timeout=30)
        seen: dict[int, int] = {}
        for n, _, _ in subscriber.arrivals:
            seen[n] = seen.get(n, 0) + 1
        latencies = [arrived - sent for _, sent, arrived in subscriber.arrivals]
        result.update(
            {
                "received": len(subscriber.arrivals),
                "lost": sum(1 for n in range(count) if n not in seen),
                "duplicated": sum(c - 1 for c in seen.values()),
                "arrival_ms": {
                    "p50": (percentile(latencies, 0.5) or 0) * 1000,
                    "p99": (percentile(latencies, 0.99) or 0) * 1000,
                },
            }
        )
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
