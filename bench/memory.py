"""Where an open stream's bytes go: tracemalloc in our server, by owner.

    python -m bench.memory [--streams 2000] [--warmup 200] [--frames 40]

Starts a private Redis and our product on daphne (as the benchmark does, with
bench/ours_settings.py and metrics in multiprocess mode), with tracemalloc on from
the interpreter's start. The load generator (bench/loadgen.py) opens `--warmup`
streams first, so that imports, caches and the hub's one-off state are in place,
and the server writes a snapshot; then `--streams` more, and a second snapshot. The
difference, divided by the streams added, is what one open stream costs in Python
objects, grouped by owner: the first frame of the allocating call stack, from the
innermost out, that is not the standard library (asyncio, functools, ...) says whose
code asked for the bytes: ours (events/, routing.py, site_config/), Channels, daphne,
Twisted, asgiref, Django, the Redis client. Also: the lines that allocate the most,
and the RSS per stream of the same traced process (tracemalloc's own bookkeeping
inflates it; the benchmark's RSS case is the untraced figure). And the peak: the most
traced at any moment while the measured streams opened, per stream. RSS follows that
peak rather than what the streams keep: what a flood of set-ups held at once and then
freed stays with the process, for its allocator to reuse.

Results: bench/results/memory.json and memory.md.
"""

from __future__ import annotations

import argparse
import gc
import json
import linecache
import os
import signal
import subprocess
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path
from typing import Any

SNAPSHOT_SIGNAL = signal.SIGUSR1
SNAPSHOT_ENV = "BENCH_MEMORY_SNAPSHOT"
OURS_APPLICATION = "site_config.asgi:application"

# Whose code asked for the bytes, by the path of the frame (checked in order).
OWNERS = (
    ("/site-packages/channels_redis/", "Redis client (channels-redis)"),
    ("/site-packages/redis/", "Redis client (channels-redis)"),
    ("/site-packages/channels/", "Channels"),
    ("/site-packages/daphne/", "daphne"),
    ("/site-packages/twisted/", "Twisted"),
    ("/site-packages/autobahn/", "daphne"),
    ("/site-packages/txaio/", "daphne"),
    ("/site-packages/asgiref/", "asgiref"),
    ("/site-packages/django/", "Django"),
    ("/site-packages/prometheus_client/", "ours (metrics library)"),
    ("/site-packages/", "other libraries"),
)


def owner_of(filename: str, root: str) -> str | None:
    """The owner of one frame's file, or None for the standard library (look further out)."""
    for marker, owner in OWNERS:
        if marker in filename:
            return owner
    if filename.startswith(os.path.join(root, "bench")):
        return None  # this script's own frames (the server's entry point)
    if filename.startswith(root):
        return "ours"
    return None


def attribute(traceback: tracemalloc.Traceback, root: str) -> tuple[str, str, str]:
    """(owner, the owner's frame, the innermost frame) of one allocation."""
    frames = list(reversed(traceback))  # tracemalloc lists the oldest first
    innermost = f"{_short(frames[0].filename, root)}:{frames[0].lineno}" if frames else "?"
    for frame in frames:
        owner = owner_of(frame.filename, root)
        if owner is not None:
            return owner, f"{_short(frame.filename, root)}:{frame.lineno}", innermost
    return "standard library alone", innermost, innermost


def _short(filename: str, root: str) -> str:
    marker = "/site-packages/"
    if marker in filename:
        return filename.split(marker, 1)[1]
    if filename.startswith(root):
        return filename[len(root) :].lstrip("/")
    return "/".join(filename.split("/")[-2:])


# -- inside the server ---------------------------------------------------------------


def serve(argv: list[str]) -> None:
    """daphne's command line, with a snapshot written on SIGUSR1 (tracemalloc is on from
    the start: PYTHONTRACEMALLOC in the environment)."""
    out = os.environ[SNAPSHOT_ENV]
    count = 0

    def dump(signum: int, frame: Any) -> None:
        nonlocal count
        gc.collect()
        # (traced now, the peak since the snapshot before).
        traced = tracemalloc.get_traced_memory()
        snapshot = tracemalloc.take_snapshot()
        count += 1
        snapshot.dump(f"{out}.{count}")
        del snapshot
        gc.collect()
        tracemalloc.reset_peak()  # a new peak from here, without the snapshot's own
        Path(f"{out}.{count}.traced").write_text(json.dumps(traced))
        Path(f"{out}.{count}.done").write_text("")

    signal.signal(SNAPSHOT_SIGNAL, dump)
    from daphne.cli import CommandLineInterface

    sys.argv = ["daphne", *argv]
    CommandLineInterface.entrypoint()


# -- the driver ----------------------------------------------------------------------


def snapshot(process: subprocess.Popen[bytes], out: Path, number: int) -> tracemalloc.Snapshot:
    os.kill(process.pid, SNAPSHOT_SIGNAL)
    done = Path(f"{out}.{number}.done")
    deadline = time.monotonic() + 300
    while not done.exists():
        if time.monotonic() > deadline or process.poll() is not None:
            raise RuntimeError("the server wrote no snapshot")
        time.sleep(0.2)
    return tracemalloc.Snapshot.load(f"{out}.{number}")


def _traced(out: Path, number: int) -> tuple[int, int]:
    """(traced now, the peak since the snapshot before) at snapshot `number`."""
    now, peak = json.loads(Path(f"{out}.{number}.traced").read_text())
    return int(now), int(peak)


def breakdown(
    before: tracemalloc.Snapshot, after: tracemalloc.Snapshot, streams: int, root: str
) -> dict[str, Any]:
    ignore = [tracemalloc.Filter(False, tracemalloc.__file__), tracemalloc.Filter(False, "<frozen *>")]
    before, after = before.filter_traces(ignore), after.filter_traces(ignore)
    owners: dict[str, list[float]] = {}
    lines: dict[tuple[str, str, str], list[float]] = {}
    for stat in after.compare_to(before, "traceback"):
        if not stat.size_diff and not stat.count_diff:
            continue
        owner, at, innermost = attribute(stat.traceback, root)
        total = owners.setdefault(owner, [0.0, 0.0])
        total[0] += stat.size_diff
        total[1] += stat.count_diff
        line = lines.setdefault((owner, at, innermost), [0.0, 0.0])
        line[0] += stat.size_diff
        line[1] += stat.count_diff
    by_owner = sorted(
        ({"owner": o, "bytes": v[0] / streams, "blocks": v[1] / streams} for o, v in owners.items()),
        key=lambda row: -row["bytes"],
    )
    ranked = sorted(
        (
            {
                "owner": owner,
                "at": at,
                "innermost": innermost,
                "source": _source(at, root),
                "bytes": v[0] / streams,
                "blocks": v[1] / streams,
            }
            for (owner, at, innermost), v in lines.items()
            if v[0] / streams >= 8
        ),
        key=lambda row: -row["bytes"],
    )
    # The heaviest lines overall, then every line of ours and Channels' (what we can cut).
    top = ranked[:30]
    top += [row for row in ranked[30:] if row["owner"] in ("ours", "Channels")]
    return {"by_owner": by_owner, "top": top, "total": sum(row["bytes"] for row in by_owner)}


def _source(at: str, root: str) -> str:
    filename, _, lineno = at.rpartition(":")
    for base in [root, *[p for p in sys.path if p.endswith("site-packages")]]:
        path = os.path.join(base, filename)
        if os.path.exists(path):
            return linecache.getline(path, int(lineno)).strip()[:100]
    return ""


def markdown(result: dict[str, Any]) -> str:
    streams = result["streams"]
    lines = [
        f"Per open stream, {streams:,} streams added to {result['warmup']:,} (tracemalloc, "
        f"{result['frames']} frames; Python objects only):",
        "",
        "| owner (who asked for the bytes) | bytes per stream | blocks per stream |",
        "|---|---:|---:|",
    ]
    for row in result["by_owner"]:
        lines.append(f"| {row['owner']} | {row['bytes']:,.0f} | {row['blocks']:.1f} |")
    lines.append(f"| **total traced** | **{result['total']:,.0f}** | |")
    lines.append(f"| RSS delta per stream (traced process) | {result['rss_per_stream']:,.0f} | |")
    if "peak_per_stream" in result:
        lines.append(f"| peak traced per stream while they opened | {result['peak_per_stream']:,.0f} | |")
    lines += [
        "",
        "| owner | where (owner's frame) | innermost frame | bytes/stream | blocks/stream | line |",
        "|---|---|---|---:|---:|---|",
    ]
    for row in result["top"]:
        source = row["source"].replace("|", "\\|")
        lines.append(
            f"| {row['owner']} | {row['at']} | {row['innermost']} | {row['bytes']:,.0f} | "
            f"{row['blocks']:.1f} | `{source}` |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.memory", description=__doc__)
    parser.add_argument("--streams", type=int, default=2000, help="streams measured")
    parser.add_argument("--warmup", type=int, default=200, help="streams opened before the first snapshot")
    parser.add_argument("--frames", type=int, default=40, help="tracemalloc's frames per allocation")
    parser.add_argument("--out", default=None, help="results (default bench/results/memory.json)")
    args = parser.parse_args(argv)

    from bench.run import (
        LISTEN_BACKLOG,
        RESULTS,
        ROOT,
        SERVER_CPU,
        JsonProcess,
        child_env,
        client_python,
        free_port,
        migrate,
        pinned,
        start_redis,
        systems,
    )

    ours = systems()["ours"]
    tmp = Path(tempfile.mkdtemp(prefix="memory-", dir=RESULTS / "tmp"))
    redis = start_redis()
    server = None
    loaders: list[JsonProcess] = []
    try:
        env = child_env(redis.url, tmp / "var", ours.settings_module())
        (tmp / "var").mkdir()
        migrate(ours, env)
        env["PROMETHEUS_MULTIPROC_DIR"] = str(tmp / "metrics")
        env["PYTHONTRACEMALLOC"] = str(args.frames)
        snapshots = tmp / "snapshot"
        env[SNAPSHOT_ENV] = str(snapshots)
        port = free_port()
        endpoint = f"tcp:port={port}:interface=127.0.0.1:backlog={LISTEN_BACKLOG}"
        log = (tmp / "server.log").open("ab")
        server = subprocess.Popen(
            pinned(
                SERVER_CPU, [sys.executable, "-m", "bench.memory", "serve", "-e", endpoint, OURS_APPLICATION]
            ),
            cwd=ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        import psutil

        ps = psutil.Process(server.pid)

        def open_streams(n: int, name: str) -> dict[str, Any]:
            loader = JsonProcess(
                [
                    str(client_python()),
                    "-m",
                    "bench.loadgen",
                    "127.0.0.1",
                    str(port),
                    f"/events/memory-{name}/",
                    str(n),
                    "1",
                    ours.ready_marker,
                ],
                env,
                tmp / f"loadgen-{name}.log",
            )
            loaders.append(loader)
            opened = loader.read("opened")
            if opened["ready"] != n:
                raise RuntimeError(f"{opened['ready']} of {n} streams opened: {opened}")
            return opened

        _wait_listening(port, server)
        open_streams(args.warmup, "warmup")
        time.sleep(2.0)
        rss0 = ps.memory_info().rss
        first = snapshot(server, snapshots, 1)
        opened = open_streams(args.streams, "measured")
        time.sleep(2.0)
        rss1 = ps.memory_info().rss
        second = snapshot(server, snapshots, 2)
        result = breakdown(first, second, args.streams, str(ROOT))
        result.update(
            streams=args.streams,
            warmup=args.warmup,
            frames=args.frames,
            open_seconds=opened["seconds"],
            rss_per_stream=(rss1 - rss0) / args.streams,
            peak_per_stream=(_traced(snapshots, 2)[1] - _traced(snapshots, 1)[0]) / args.streams,
        )
    finally:
        for loader in loaders:
            loader.send({"cmd": "close"})
            loader.close()
        if server is not None and server.poll() is None:
            server.terminate()
            try:
                server.wait(timeout=15)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait()
        redis.stop()
    out = Path(args.out) if args.out else RESULTS / "memory.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    out.with_suffix(".md").write_text(markdown(result))
    print(markdown(result))
    print(f"results: {out}, {out.with_suffix('.md')}")
    return 0


def _wait_listening(port: int, process: subprocess.Popen[bytes], timeout: float = 60.0) -> None:
    import socket

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError("the server exited")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            time.sleep(0.2)
    raise RuntimeError("the server did not listen")


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "serve":
        serve(sys.argv[2:])
    else:
        sys.exit(main())
