"""HTTP publishing load: POSTs over keep-alive connections; prints one JSON line.

    python -m bench.postload HOST PORT PATH TOKEN REQUESTS CONCURRENCY BATCH

CONCURRENCY connections each send their share of REQUESTS one after the other (a POST,
then its answer, then the next). BATCH 0 posts one event per request to PATH
(/events/<channel>/); BATCH k posts lists of k events to /events/. Measured: requests
and events per second, each request's duration (p50/p99), and answers other than 201.
Runs on uvloop when the interpreter has it (the benchmark's virtualenv).
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from typing import Any

WARMUP = 20


def body_for(channel: str, n: int, batch: int) -> bytes:
    if not batch:
        return json.dumps({"event": "bench", "data": {"n": n, "t": time.monotonic()}}).encode()
    items = [{"channel": channel, "event": "bench", "data": {"n": n + i}} for i in range(batch)]
    return json.dumps(items).encode()


async def connection(
    host: str, port: int, path: str, token: str, channel: str, first: int, requests: int, batch: int
) -> tuple[list[float], dict[int, int]]:
    reader, writer = await asyncio.open_connection(host, port)
    durations: list[float] = []
    statuses: dict[int, int] = {}
    try:
        for i in range(requests):
            body = body_for(channel, first + i * max(batch, 1), batch)
            head = (
                f"POST {path} HTTP/1.1\r\nHost: {host}:{port}\r\nAuthorization: Bearer {token}\r\n"
                f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
            ).encode()
            started = time.monotonic()
            writer.write(head + body)
            status_line = await reader.readline()
            length = 0
            while True:
                line = await reader.readline()
                if line in (b"\r\n", b""):
                    break
                name, _, value = line.decode("latin-1").partition(":")
                if name.strip().lower() == "content-length":
                    length = int(value.strip())
            await reader.readexactly(length)
            durations.append(time.monotonic() - started)
            status = int(status_line.split()[1]) if status_line else 0
            statuses[status] = statuses.get(status, 0) + 1
    finally:
        writer.close()
    return durations, statuses


async def run(
    host: str, port: int, path: str, token: str, requests: int, concurrency: int, batch: int
) -> Any:
    channel = path.strip("/").split("/")[-1] if not batch else "bench-post-batch"
    await connection(host, port, path, token, channel, -WARMUP * max(batch, 1), WARMUP, batch)
    each = requests // concurrency
    started = time.monotonic()
    results = await asyncio.gather(
        *(
            connection(host, port, path, token, channel, k * each * max(batch, 1), each, batch)
            for k in range(concurrency)
        )
    )
    seconds = time.monotonic() - started
    durations = sorted(d for result, _ in results for d in result)
    statuses: dict[str, int] = {}
    for _, counts in results:
        for status, count in counts.items():
            statuses[str(status)] = statuses.get(str(status), 0) + count
    done = len(durations)
    return {
        "requests": done,
        "events": done * max(batch, 1),
        "seconds": seconds,
        "requests_per_second": done / seconds,
        "events_per_second": done * max(batch, 1) / seconds,
        "call_ms": {
            "p50": durations[done // 2] * 1000,
            "p99": durations[min(done - 1, int(done * 0.99))] * 1000,
        },
        "statuses": statuses,
    }


def main() -> None:
    host, port, path, token = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
    requests, concurrency, batch = int(sys.argv[5]), int(sys.argv[6]), int(sys.argv[7])
    try:
        from uvloop import run as runner
    except ImportError:
        runner = asyncio.run
    print(json.dumps(runner(run(host, port, path, token, requests, concurrency, batch))), flush=True)


if __name__ == "__main__":
    main()
