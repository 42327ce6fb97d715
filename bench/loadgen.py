"""The load generator: N concurrent SSE connections on raw asyncio sockets.

    python -m bench.loadgen HOST PORT PATH N TOTAL READY_MARKER

Standard library only, so that it runs in any of the benchmark's interpreters. It opens
all N connections at once, reports how long until every one was subscribed, then
records every delivery until told to stop. Commands arrive as JSON lines on stdin and
every answer is one JSON line on stdout (bench/run.py drives it).

Why it stays cheap (the client must never be what limits the figures): uvloop where
it is installed, no HTTP library, no chunked-encoding decoder and no SSE parser while
events arrive. Every server under test sends each `http.response.body` message as one
HTTP chunk, so a frame is never split by the chunk framing; a read is cut after its
last complete frame (a blank line) and kept with one clock reading, and deliveries are
counted with bytes.count. Only when a phase is collected does one regular expression,
run in C, pull the event number and the publish timestamp out of every kept frame.
"""

from __future__ import annotations

import array
import asyncio
import contextlib
import json
import re
import resource
import sys
import threading
import time
from typing import Any

# `"n":12,"t":345.678` in our compact JSON; `"n": 12, "t": 345.678` in
# django-eventstream's (json.dumps with its default separators).
DELIVERY = re.compile(rb'"n": ?(\d+), ?"t": ?([0-9.eE+-]+)')
FRAME_END = b"\n\n"
OPEN_TIMEOUT_SECONDS = 180.0


DELIVERY_MARK = b'"n":'


class Recorder:
    """Every delivery of every connection: the raw frames as they arrived (parsed by
    `parse`), then per-connection counts per event number and one (number, latency,
    arrival) triple per delivery."""

    def __init__(self, total: int) -> None:
        self.total = total
        self.received: list[tuple[Stream, float, bytes]] = []
        self.arrived = 0  # deliveries seen, counted cheaply while they arrive
        self.numbers = array.array("q")
        self.latencies = array.array("d")
        self.arrivals = array.array("d")
        # firsts[n]: streams that have received event n at least once (after parse()).
        self.firsts = array.array("q", bytes(8 * total))
        self.unexpected = 0

    def parse(self) -> None:
        received, self.received = self.received, []
        numbers, latencies, arrivals = self.numbers, self.latencies, self.arrivals
        total = self.total
        for stream, now, frames in received:
            counts = stream.counts
            for number, published in DELIVERY.findall(frames):
                n = int(number)
                if n >= total:
                    self.unexpected += 1
                    continue
                seen = counts[n]
                if seen == 0:
                    self.firsts[n] += 1
                if seen < 255:
                    counts[n] = seen + 1
                numbers.append(n)
                latencies.append(now - float(published))
                arrivals.append(now)


class Stream(asyncio.Protocol):
    def __init__(self, request: bytes, ready_marker: bytes, recorder: Recorder, on_ready: Any) -> None:
        self.request = request
        self.ready_marker = ready_marker
        self.recorder = recorder
        self.on_ready = on_ready
        self.counts = bytearray(recorder.total)
        self.status: int | None = None
        self.ready = False
        self.closed = False
        self.buffer = b""
        self.transport: Any = None

    def connection_made(self, transport: Any) -> None:
        self.transport = transport
        transport.write(self.request)

    def data_received(self, data: bytes) -> None:
        buffer = self.buffer + data if self.buffer else data
        if not self.ready:
            if self.status is None:
                if len(buffer) < 12:
                    self.buffer = buffer
                    return
                self.status = int(buffer[9:12])
                if self.status != 200:
                    self.buffer = b""
                    self.on_ready(self)
                    return
            if self.ready_marker not in buffer:
                self.buffer = buffer[-256:]
                return
            self.ready = True
            self.on_ready(self)
        end = buffer.rfind(FRAME_END)
        if end < 0:
            self.buffer = buffer
            return
        end += 2
        if end == len(buffer):
            frames, self.buffer = buffer, b""
        else:
            frames, self.buffer = buffer[:end], buffer[end:]
        found = frames.count(DELIVERY_MARK)
        if found:
            self.recorder.arrived += found
            self.recorder.received.append((self, time.monotonic(), frames))

    def connection_lost(self, exc: BaseException | None) -> None:
        self.closed = True
        if not self.ready:
            self.on_ready(self)


def percentile(values: list[float], fraction: float) -> float:
    if not values:
        return float("nan")
    index = min(len(values) - 1, max(0, round(fraction * (len(values) - 1))))
    return values[index]


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


class LoadGenerator:
    def __init__(self, host: str, port: int, path: str, n: int, total: int, ready_marker: bytes) -> None:
        self.host = host
        self.port = port
        self.n = n
        self.recorder = Recorder(total)
        self.ready_marker = ready_marker
        self.request = (
            f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nAccept: text/event-stream\r\n"
            "Cache-Control: no-cache\r\n\r\n"
        ).encode()
        self.streams: list[Stream] = []
        self.settled = 0
        self.all_settled = asyncio.Event()
        self.connect_errors: dict[str, int] = {}
        self.collected = 0  # deliveries taken into account by earlier collects
        self.mark_time = time.monotonic()
        self.mark_cpu = cpu_seconds()

    def _settled(self, stream: Stream) -> None:
        self.settled += 1
        if self.settled >= self.n:
            self.all_settled.set()

    async def _connect(self) -> None:
        loop = asyncio.get_running_loop()
        stream = Stream(self.request, self.ready_marker, self.recorder, self._settled)
        self.streams.append(stream)
        try:
            await loop.create_connection(lambda: stream, self.host, self.port)
        except OSError as exc:
            key = type(exc).__name__
            self.connect_errors[key] = self.connect_errors.get(key, 0) + 1
            stream.closed = True
            self._settled(stream)

    async def open(self) -> dict[str, Any]:
        started = time.monotonic()
        cpu = cpu_seconds()
        # All at once: the server sees N connection attempts in the same instant.
        await asyncio.gather(*(self._connect() for _ in range(self.n)))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.all_settled.wait(), OPEN_TIMEOUT_SECONDS)
        seconds = time.monotonic() - started
        statuses: dict[str, int] = {}
        for stream in self.streams:
            key = str(stream.status) if stream.status is not None else "none"
            statuses[key] = statuses.get(key, 0) + 1
        return {
            "event": "opened",
            "seconds": seconds,
            "ready": sum(1 for stream in self.streams if stream.ready),
            "statuses": statuses,
            "connect_errors": self.connect_errors,
            "client_cpu_seconds": cpu_seconds() - cpu,
        }

    async def collect(
        self, lo: int, hi: int, deadline_seconds: float, quiet_seconds: float
    ) -> dict[str, Any]:
        """Wait until every ready stream has events lo..hi-1 (or nothing new arrives for
        `quiet_seconds`, or the deadline passes), then count and summarise them."""
        ready = [stream for stream in self.streams if stream.ready]
        expected = len(ready) * (hi - lo)
        rec = self.recorder
        started = time.monotonic()
        # Cheap test first (frames counted as they came); only when enough frames are
        # in are they parsed, to see whether each stream has each event of the phase
        # (late or repeated deliveries of an earlier phase count among the frames).
        target = self.collected + expected
        last_count, last_change, parse_seconds = -1, started, 0.0
        client_cpu = client_busy = 0.0
        while True:
            count = rec.arrived
            now = time.monotonic()
            if count != last_count:
                last_count, last_change = count, now
            quiet = now - last_change > quiet_seconds or now - started > deadline_seconds
            if count >= target or quiet:
                # This process's CPU while the deliveries arrived (before parsing them).
                client_cpu = cpu_seconds() - self.mark_cpu - parse_seconds
                client_busy = client_cpu / max(last_change - self.mark_time - parse_seconds, 1e-9)
                parsing = time.monotonic()
                rec.parse()
                parse_seconds += time.monotonic() - parsing
                if quiet or sum(rec.firsts[lo:hi]) >= expected:
                    break
                target = rec.arrived + 1
            await asyncio.sleep(0.05)
        self.collected = rec.arrived
        lost = duplicated = 0
        for stream in ready:
            for c in stream.counts[lo:hi]:
                if c == 0:
                    lost += 1
                elif c > 1:
                    duplicated += c - 1
        latencies = sorted(rec.latencies[i] for i, n in enumerate(rec.numbers) if lo <= n < hi)
        arrivals = [rec.arrivals[i] for i, n in enumerate(rec.numbers) if lo <= n < hi]
        return {
            "event": "collected",
            "expected": expected,
            "deliveries": len(latencies),
            "lost": lost,
            "duplicated": duplicated,
            "unexpected": rec.unexpected,
            "closed_streams": sum(1 for stream in ready if stream.closed),
            "latency_p50": percentile(latencies, 0.50),
            "latency_p99": percentile(latencies, 0.99),
            "latency_max": latencies[-1] if latencies else float("nan"),
            "first_arrival": min(arrivals) if arrivals else None,
            "last_arrival": max(arrivals) if arrivals else None,
            "client_cpu_seconds": client_cpu,
            "client_busy": client_busy,
            "parse_seconds": parse_seconds,
            "collected_t": time.monotonic(),
        }

    def close(self) -> None:
        for stream in self.streams:
            if stream.transport is not None:
                stream.transport.close()


def _raise_fd_limit() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def _reply(payload: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(payload) + "\n")
    sys.stdout.flush()


async def main(argv: list[str]) -> None:
    host, port, path, n, total, marker = argv
    _raise_fd_limit()
    loop = asyncio.get_running_loop()
    commands: asyncio.Queue[dict[str, Any]] = asyncio.Queue()

    def read_stdin() -> None:
        for line in sys.stdin:
            if line.strip():
                loop.call_soon_threadsafe(commands.put_nowait, json.loads(line))
        loop.call_soon_threadsafe(commands.put_nowait, {"cmd": "close"})

    threading.Thread(target=read_stdin, daemon=True).start()
    generator = LoadGenerator(host, int(port), path, int(n), int(total), marker.encode())
    _reply(await generator.open())
    while True:
        command = await commands.get()
        if command["cmd"] == "mark":
            generator.mark_time, generator.mark_cpu = time.monotonic(), cpu_seconds()
            _reply({"event": "marked"})
        elif command["cmd"] == "collect":
            _reply(
                await generator.collect(
                    command["lo"], command["hi"], command.get("deadline", 60.0), command.get("quiet", 10.0)
                )
            )
        elif command["cmd"] == "close":
            generator.close()
            await asyncio.sleep(0.2)
            _reply({"event": "closed"})
            return


if __name__ == "__main__":
    try:
        import uvloop  # the benchmark's virtualenv has it; the smoke test runs without
    except ImportError:
        asyncio.run(main(sys.argv[1:]))
    else:
        uvloop.run(main(sys.argv[1:]))
