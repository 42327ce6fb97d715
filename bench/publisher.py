"""The publisher process: events through each system's own `send_event`.

    python -m bench.publisher SYSTEM CHANNEL

SYSTEM is `ours` (events.send_event, in the project's virtualenv), `eventstream`
(django_eventstream.send_event, in the benchmark's virtualenv) or `raw` (a plain Redis
PUBLISH for the raw ASGI ceiling). Each payload is `{"n": <number>, "t": <time>}`, where
`t` is time.monotonic() read just before the publish call (CLOCK_MONOTONIC is one clock
for every process of the machine), so the load generator measures publish-to-arrival.

Commands are JSON lines on stdin: {"cmd": "publish", "first": 0, "count": 100,
"rate": 20} publishes events first..first+count-1 at `rate` per second (0: as fast as
possible) and answers one JSON line. With "batch": B (more than 1), events go out B at a
time through each system's bulk path: ours `send_events` (one transaction, one Redis
round trip), the raw ceiling a pipeline of B PUBLISHes; django-eventstream has none, so
its B events are B `send_event` calls. Every event of a batch carries the time read just
before the batch's call.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Callable
from typing import Any

WARMUP_CHANNEL = "bench-warmup"


def _django(settings_module: str) -> None:
    os.environ["DJANGO_SETTINGS_MODULE"] = settings_module
    import django

    django.setup()


def sender(system: str, channel: str) -> Callable[[str, dict[str, Any]], Any]:
    if system == "ours":
        _django("bench.ours_settings")
        from events import send_event

        return lambda name, payload: send_event(name, payload, event="bench")
    if system == "eventstream":
        _django("bench.peer_site.settings")
        from django_eventstream import send_event as peer_send_event

        return lambda name, payload: peer_send_event(name, "message", payload)
    if system == "raw":
        import redis

        client = redis.Redis.from_url(os.environ["REDIS_URL"])
        return lambda name, payload: client.publish(name, json.dumps(payload, separators=(",", ":")))
    raise SystemExit(f"unknown system {system!r}")


Batch = Callable[[str, list[dict[str, Any]]], Any]


def batch_sender(system: str, send: Callable[[str, dict[str, Any]], Any]) -> Batch:
    if system == "ours":
        from events import send_events

        return lambda name, payloads: send_events(
            [{"channel": name, "data": payload, "event": "bench"} for payload in payloads]
        )
    if system == "raw":
        import redis

        client = redis.Redis.from_url(os.environ["REDIS_URL"])

        def publish_all(name: str, payloads: list[dict[str, Any]]) -> None:
            pipeline = client.pipeline(transaction=False)
            for payload in payloads:
                pipeline.publish(name, json.dumps(payload, separators=(",", ":")))
            pipeline.execute()

        return publish_all

    def one_by_one(name: str, payloads: list[dict[str, Any]]) -> None:
        for payload in payloads:
            send(name, payload)

    return one_by_one


def main() -> None:
    system, channel = sys.argv[1], sys.argv[2]
    send = sender(system, channel)
    send_batch = batch_sender(system, send)
    # Connections, imports and prepared statements are set up by this one, not timed.
    send(WARMUP_CHANNEL, {"n": -1, "t": time.monotonic()})
    print(json.dumps({"event": "ready"}), flush=True)
    for line in sys.stdin:
        if not line.strip():
            continue
        command = json.loads(line)
        if command["cmd"] != "publish":
            break
        first, count, rate = command["first"], command["count"], command["rate"]
        batch = max(1, int(command.get("batch", 1)))
        started = time.monotonic()
        first_t = last_t = started
        for i in range(0, count, batch):
            if rate:
                delay = started + i / rate - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
            t = time.monotonic()
            if i == 0:
                first_t = t
            if batch == 1:
                send(channel, {"n": first + i, "t": t})
            else:
                numbers = range(first + i, first + min(i + batch, count))
                send_batch(channel, [{"n": n, "t": t} for n in numbers])
            last_t = t
        done = time.monotonic()
        print(
            json.dumps(
                {
                    "event": "published",
                    "first_t": first_t,
                    "last_t": last_t,
                    "done_t": done,
                    "rate": count / max(done - started, 1e-9),
                }
            ),
            flush=True,
        )


if __name__ == "__main__":
    main()
