"""The benchmark driver: servers, load generator and publisher, one case at a time.

Every case starts a fresh server process (so RSS and CPU belong to that case alone),
pinned to CPU 0; the load generator and the publisher are pinned to CPU 1, so the
server has a core to itself and the client never takes its time. Redis shares CPU 0:
it needs little, and behind a busy client it would make the server wait. Cases
run interleaved: for each N, our product, then django-eventstream, then the raw
ceiling, so that a change in the machine's state during the run hits all three alike.

Per case:
1. open N streams at once and time until every one is subscribed (the load
   generator's `opened`), then read the server's RSS: (RSS - RSS before) / N;
2. latency: `latency_events` events at `rate` per second; p50/p99/max over all
   N x M deliveries, publish call to arrival;
3. saturation: `saturation_events` events as fast as the publisher goes; deliveries
   per second from the first publish to the last arrival, and the server's CPU time
   (user + system, from psutil) divided by the deliveries.
Lost and duplicated deliveries are counted per stream and event in both phases.

The overload cases (bench/stress.py) run the same way with phases of their own.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"
RESULTS = BENCH / "results"
PEER_VENV = BENCH / ".venv-peer"
REQUIREMENTS = BENCH / "requirements.txt"
SERVER_CPU = 0
LISTEN_BACKLOG = 2048
# A phase ends when every stream has every event, or when nothing has arrived for this
# long (a server far behind still gets its chance to catch up), or at its deadline.
QUIET_SECONDS = 20.0
CLIENT_CPU = 1


# -- plans ---------------------------------------------------------------------------


@dataclass
class Plan:
    sizes: list[int]
    systems: list[str]
    rate: float = 20.0
    latency_events: int = 100
    # Saturation events per N: enough for a few seconds of our product at full speed.
    saturation_events: dict[int, int] = field(default_factory=lambda: {100: 1000, 1000: 400, 5000: 100})
    rss_size: int = 10_000
    smoke: bool = False
    # The publishing section (bench/publishing.py): None skips it.
    publishing: Any = None
    # Systems whose server py-spy samples during each phase (collapsed stacks in the logs).
    profile: list[str] = field(default_factory=list)

    # The overload cases (bench/stress.py): which of them, and their sizes.
    stress: list[str] = field(default_factory=list)
    overload_size: int = 5000
    overload_rate: float = 40.0
    overload_seconds: float = 10.0
    bulk_size: int = 1000
    bulk_events: int = 600
    bulk_batch: int = 10
    burst_size: int = 1000
    burst_events: int = 1000

    def saturation_for(self, n: int) -> int:
        if n in self.saturation_events:
            return self.saturation_events[n]
        return max(20, 400_000 // max(n, 1))


@dataclass
class Phase:
    """Events published to every stream of a case and collected from all of them."""

    name: str
    count: int
    rate: float  # events per second; 0: as fast as the publisher goes
    batch: int = 1  # events per publishing call (bench/publisher.py)
    slack: float = 30.0  # seconds a phase may take beyond `per_second`'s estimate
    per_second: int = 10_000  # deliveries per second assumed for the phase's deadline


SMOKE_PLAN = Plan(
    sizes=[20],
    systems=["ours"],
    rate=50.0,
    latency_events=20,
    saturation_events={20: 20},
    rss_size=0,
    smoke=True,
    # A burst at a tiny size: a whole list of events at once, each still delivered once.
    stress=["burst"],
    burst_size=20,
    burst_events=50,
)


def smoke_plan() -> Plan:
    from bench.publishing import SMOKE_PUBLISH_PLAN

    return Plan(**{**SMOKE_PLAN.__dict__, "publishing": SMOKE_PUBLISH_PLAN})


# -- systems -------------------------------------------------------------------------


@dataclass
class System:
    name: str
    label: str
    python: Path
    ready_marker: str  # bytes a stream's client sees once it is subscribed
    health_path: str
    health_any_status: bool

    def server_command(self, port: int) -> list[str]:
        if self.name == "raw":
            return [
                str(self.python),
                "-m",
                "uvicorn",
                "bench.raw_app:app",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--loop",
                "uvloop",
                "--http",
                "httptools",
                "--no-access-log",
                "--log-level",
                "warning",
            ]
        target = "site_config.asgi:application" if self.name == "ours" else "bench.peer_site.asgi:application"
        # As the Procfile runs it, on the loopback address, but with the listen backlog
        # uvicorn has by default (2048) instead of Twisted's 50: with 50, connections
        # opened at once overflow the accept queue and their SYNs are retried by the
        # kernel after 1 s, 3 s, ..., which the open time would otherwise measure.
        endpoint = f"tcp:port={port}:interface=127.0.0.1:backlog={LISTEN_BACKLOG}"
        return [str(self.python), "-m", "daphne", "-e", endpoint, target]

    def settings_module(self) -> str | None:
        return {"ours": "bench.ours_settings", "eventstream": "bench.peer_site.settings"}.get(self.name)


def systems() -> dict[str, System]:
    ours_python = Path(sys.executable)
    peer_python = PEER_VENV / "bin" / "python"
    return {
        # Our stream is subscribed once its first `id:` block has arrived (README).
        "ours": System("ours", "ours (daphne)", ours_python, "\nid: ", "/healthz", False),
        # django-eventstream registers the listener before its first body, which
        # carries `event: stream-open`.
        "eventstream": System(
            "eventstream", "django-eventstream 5.3 (daphne)", peer_python, "stream-open", "/nothing/", True
        ),
        "raw": System("raw", "raw ASGI (uvicorn)", peer_python, ":ok", "/nothing/", True),
    }


# -- processes -----------------------------------------------------------------------


def client_python() -> Path:
    """The load generator runs on uvloop from the benchmark's virtualenv when it exists
    (a full run creates it), else on the project's interpreter and plain asyncio."""
    peer = PEER_VENV / "bin" / "python"
    return peer if peer.exists() else Path(sys.executable)


def pinned(cpu: int, command: list[str]) -> list[str]:
    if shutil.which("taskset") and (os.cpu_count() or 1) >= 2:
        return ["taskset", "-c", str(cpu), *command]
    return command


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# One key for every process of a benchmark run.
RUN_SECRET_KEY = secrets.token_urlsafe(50)


def child_env(redis_url: str, var_dir: Path, settings_module: str | None = None) -> dict[str, str]:
    env = {
        key: value
        for key, value in os.environ.items()
        if key not in {"DATABASE_URL", "REDIS_URL", "DJANGO_SETTINGS_MODULE", "VAR_DIR", "PYTHONPATH"}
    }
    env.update(REDIS_URL=redis_url, VAR_DIR=str(var_dir), PYTHONPATH=str(ROOT), PYTHONUNBUFFERED="1")
    # A fresh VAR_DIR has no development key: the servers would refuse to start.
    env.setdefault("SECRET_KEY", RUN_SECRET_KEY)
    if settings_module:
        env["DJANGO_SETTINGS_MODULE"] = settings_module
    return env


class JsonProcess:
    """A child that takes JSON commands on stdin and answers JSON lines on stdout."""

    def __init__(self, command: list[str], env: dict[str, str], log: Path) -> None:
        self.log = log.open("ab")
        self.process = subprocess.Popen(
            command,
            cwd=ROOT,
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self.log,
            text=True,
        )

    def send(self, payload: dict[str, Any]) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(json.dumps(payload) + "\n")
        self.process.stdin.flush()

    def read(self, expected: str) -> dict[str, Any]:
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        if not line:
            raise RuntimeError(f"{self.process.args[:4]} exited ({self.process.wait()}); see {self.log.name}")
        answer: dict[str, Any] = json.loads(line)
        if answer.get("event") != expected:
            raise RuntimeError(f"expected {expected!r}, got {answer}")
        return answer

    def close(self, timeout: float = 20.0) -> None:
        try:
            if self.process.stdin:
                self.process.stdin.close()
            self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        finally:
            if self.process.stdout:
                self.process.stdout.close()
            self.log.close()


class Server:
    def __init__(self, system: System, env: dict[str, str], log: Path) -> None:
        self.system = system
        self.port = free_port()
        self.log = log.open("ab")
        self.process = subprocess.Popen(
            pinned(SERVER_CPU, system.server_command(self.port)),
            cwd=ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )
        # taskset execs the server: the pid is the server's own.
        self.ps = psutil.Process(self.process.pid)
        self._wait_healthy(log)

    def _wait_healthy(self, log: Path, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        url = f"http://127.0.0.1:{self.port}{self.system.health_path}"
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.system.name} server exited; see {log}")
            try:
                with urllib.request.urlopen(url, timeout=2) as response:
                    if response.status == 200:
                        return
            except urllib.error.HTTPError as exc:
                if self.system.health_any_status:
                    return
                exc.close()
            except OSError:
                pass
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"{self.system.name} server did not answer within {timeout} s; see {log}")

    def cpu_seconds(self) -> float:
        times = self.ps.cpu_times()
        return float(times.user + times.system)

    def system_seconds(self) -> float:
        return float(self.ps.cpu_times().system)

    def rss(self) -> int:
        return int(self.ps.memory_info().rss)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.log.close()


# -- set-up --------------------------------------------------------------------------


def ensure_peer_venv() -> None:
    """Create bench/.venv-peer with bench/requirements.txt (django-eventstream, uvicorn,
    matplotlib), again whenever the requirements change."""
    stamp = PEER_VENV / ".requirements.sha256"
    wanted = hashlib.sha256(REQUIREMENTS.read_bytes()).hexdigest()
    if stamp.exists() and stamp.read_text().strip() == wanted:
        return
    print(f"== setting up {PEER_VENV.relative_to(ROOT)} from {REQUIREMENTS.relative_to(ROOT)}", flush=True)
    if not (PEER_VENV / "bin" / "python").exists():
        subprocess.run([sys.executable, "-m", "venv", str(PEER_VENV)], check=True)
    pip = [
        str(PEER_VENV / "bin" / "python"),
        "-m",
        "pip",
        "install",
        "--quiet",
        "--disable-pip-version-check",
    ]
    subprocess.run([*pip, "-r", str(REQUIREMENTS)], check=True)
    stamp.write_text(wanted + "\n")


def migrate(system: System, env: dict[str, str]) -> None:
    subprocess.run(
        [str(system.python), "-m", "django", "migrate", "--noinput", "-v", "0"], cwd=ROOT, env=env, check=True
    )


def start_redis() -> Any:
    """A private redis-server (the tests' own helper), on the server's core: Redis uses
    little CPU (one message per event to the one subscribing process), but on the
    client's core it would wait for a time slice behind the load generator and the
    publisher, and the server would idle."""
    sys.path.insert(0, str(ROOT))
    from tests.servers import RedisServer

    redis = RedisServer()
    redis.start()
    if machine()["pinned"] and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(redis.process.pid, {SERVER_CPU})
    return redis


# -- one case ------------------------------------------------------------------------


def load_phases(plan: Plan, n: int) -> list[Phase]:
    """The fan-out case's phases: latency at a fixed rate, then saturation (as fast as
    the publisher goes, one send_event per event)."""
    return [
        Phase("latency", plan.latency_events, plan.rate, slack=30, per_second=20_000),
        Phase("saturation", plan.saturation_for(n), 0.0, slack=60, per_second=10_000),
    ]


def run_case(
    system: System,
    n: int,
    plan: Plan,
    redis_url: str,
    tmp: Path,
    rss_only: bool = False,
    phases: list[Phase] | None = None,
    kind: str = "load",
) -> dict[str, Any]:
    """Open N streams, then publish and collect each phase in turn (none: RSS only)."""
    if kind == "load":
        kind = "rss" if rss_only else "load"
    if phases is None:
        phases = [] if rss_only else load_phases(plan, n)
    channel = f"bench-{n}-{kind}"
    tag = f"{n}" if kind in ("load", "rss") else f"{kind}-{n}"
    var_dir = tmp / system.name
    env = child_env(redis_url, var_dir, system.settings_module())
    if system.name == "ours":
        # Metrics as a production host runs them: every process writing its figures to
        # the shared directory (events/metrics.py), the costlier of the two modes.
        env["PROMETHEUS_MULTIPROC_DIR"] = str(tmp / f"metrics-{tag}{'-rss' if rss_only else ''}")
    logs = tmp / "logs"
    total = sum(phase.count for phase in phases)
    result: dict[str, Any] = {
        "system": system.name,
        "label": system.label,
        "n": n,
        "rss_only": rss_only,
        "kind": kind,
    }
    print(f"-- {system.label}, N={n}{' (RSS only)' if rss_only else ''}, {kind}", flush=True)

    server = Server(system, env, logs / f"{system.name}-{tag}-server.log")
    publisher = loadgen = None
    try:
        if not rss_only:
            publisher = JsonProcess(
                pinned(CLIENT_CPU, [str(system.python), "-m", "bench.publisher", system.name, channel]),
                env,
                logs / f"{system.name}-{tag}-publisher.log",
            )
            publisher.read("ready")
        time.sleep(0.5)
        rss_before, cpu_before = server.rss(), server.cpu_seconds()
        path = f"/events/{channel}/"
        loadgen = JsonProcess(
            pinned(
                CLIENT_CPU,
                [
                    str(client_python()),
                    "-m",
                    "bench.loadgen",
                    "127.0.0.1",
                    str(server.port),
                    path,
                    str(n),
                    str(max(total, 1)),
                    system.ready_marker,
                ],
            ),
            env,
            logs / f"{system.name}-{tag}-loadgen.log",
        )
        opened = loadgen.read("opened")
        time.sleep(1.0)  # let the server finish what the connections started
        rss_after = server.rss()
        result["open"] = {
            "seconds": opened["seconds"],
            "ready": opened["ready"],
            "statuses": opened["statuses"],
            "connect_errors": opened["connect_errors"],
            "server_cpu_seconds": server.cpu_seconds() - cpu_before,
            "rss_before": rss_before,
            "rss_after": rss_after,
            "rss_per_stream_kb": (rss_after - rss_before) / n / 1024,
        }
        print(
            f"   opened {opened['ready']}/{n} in {opened['seconds']:.2f} s, statuses {opened['statuses']}, "
            f"RSS {result['open']['rss_per_stream_kb']:.1f} KB/stream",
            flush=True,
        )
        if rss_only or opened["ready"] == 0:
            return result
        assert publisher is not None

        first = 0
        for phase in phases:
            name, count, rate = phase.name, phase.count, phase.rate
            profiler = _profile(system, plan, server, logs / f"{system.name}-{tag}-{name}.pyspy.txt")
            loadgen.send({"cmd": "mark"})
            loadgen.read("marked")
            cpu0, sys0 = server.cpu_seconds(), server.system_seconds()
            publisher.send(
                {"cmd": "publish", "first": first, "count": count, "rate": rate, "batch": phase.batch}
            )
            published = publisher.read("published")
            # Generous: a phase ends early once every delivery is in, or when quiet.
            deadline = phase.slack + opened["ready"] * count / phase.per_second
            loadgen.send(
                {
                    "cmd": "collect",
                    "lo": first,
                    "hi": first + count,
                    "deadline": deadline,
                    "quiet": QUIET_SECONDS,
                }
            )
            collected = loadgen.read("collected")
            cpu1, sys1 = server.cpu_seconds(), server.system_seconds()
            _stop_profile(profiler)
            result[name] = _phase(collected, published, cpu1 - cpu0, sys1 - sys0, rate)
            result[name]["batch"] = phase.batch
            _print_phase(name, result[name])
            first += count
        return result
    finally:
        if loadgen is not None:
            loadgen.send({"cmd": "close"})
            loadgen.close()
        if publisher is not None:
            publisher.close()
        server.stop()


def _profile(system: System, plan: Plan, server: Server, out: Path) -> subprocess.Popen[bytes] | None:
    """py-spy sampling the server (its CPU time then includes py-spy's pauses, so
    profiled runs are for finding where the time goes, not for the figures)."""
    if system.name not in plan.profile:
        return None
    spy = PEER_VENV / "bin" / "py-spy"
    process = subprocess.Popen(
        [
            str(spy),
            "record",
            "--pid",
            str(server.process.pid),
            "--rate",
            "250",
            "--format",
            "raw",
            "--nonblocking",
            "-o",
            str(out),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    time.sleep(1.0)  # py-spy attaches
    return process


def _stop_profile(process: subprocess.Popen[bytes] | None) -> None:
    if process is not None:
        process.send_signal(signal.SIGINT)
        process.wait(timeout=30)


def _phase(
    collected: dict[str, Any], published: dict[str, Any], server_cpu: float, server_system: float, rate: float
) -> dict[str, Any]:
    # Each (stream, event) pair once: a peer's repeated frames are not deliveries.
    deliveries = collected["expected"] - collected["lost"]
    last = collected["last_arrival"]
    span = (last - published["first_t"]) if last is not None else float("nan")
    # The server's CPU over the whole phase (publish start to collected, less the load
    # generator's parsing, when nothing happens): the share of its core it used.
    wall = collected["collected_t"] - collected["parse_seconds"] - published["first_t"]
    return {
        "rate": rate,
        "publish_rate": published["rate"],
        "expected": collected["expected"],
        "deliveries": deliveries,
        "frames": collected["deliveries"],
        "lost": collected["lost"],
        "duplicated": collected["duplicated"],
        "closed_streams": collected["closed_streams"],
        "latency_ms": {key: collected[f"latency_{key}"] * 1000 for key in ("p50", "p99", "max")},
        "seconds": span,
        "deliveries_per_second": deliveries / span if deliveries and span > 0 else 0.0,
        "server_cpu_seconds": server_cpu,
        # The kernel's share (system time: the socket writes themselves).
        "server_system_seconds": server_system,
        "server_cpu_busy": server_cpu / wall if wall > 0 else float("nan"),
        "server_us_per_delivery": server_cpu / deliveries * 1e6 if deliveries else float("nan"),
        "client_cpu_seconds": collected["client_cpu_seconds"],
        "client_busy": collected["client_busy"],
    }


def _print_phase(name: str, phase: dict[str, Any]) -> None:
    lat = phase["latency_ms"]
    print(
        f"   {name}: {phase['deliveries']}/{phase['expected']} delivered, lost {phase['lost']}, "
        f"dup {phase['duplicated']} ({phase['frames']} frames); "
        f"p50 {lat['p50']:.1f} p99 {lat['p99']:.1f} max {lat['max']:.1f} ms; "
        f"{phase['deliveries_per_second']:,.0f}/s (publisher {phase['publish_rate']:.0f} ev/s); "
        f"server {phase['server_us_per_delivery']:.1f} us/delivery, busy {phase['server_cpu_busy']:.0%} "
        f"(kernel {phase['server_system_seconds'] / max(phase['server_cpu_seconds'], 1e-9):.0%}); "
        f"client busy {phase['client_busy']:.0%}",
        flush=True,
    )


# -- the whole run -------------------------------------------------------------------


def machine() -> dict[str, Any]:
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cpu": model,
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "pinned": bool(shutil.which("taskset")) and (os.cpu_count() or 1) >= 2,
        "server_cpu": SERVER_CPU,
        "client_cpu": CLIENT_CPU,
    }


def run(plan: Plan) -> dict[str, Any]:
    if not plan.smoke:
        ensure_peer_venv()
    all_systems = systems()
    chosen = [all_systems[name] for name in plan.systems]
    (RESULTS / "tmp").mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix="run-", dir=RESULTS / "tmp"))
    (tmp / "logs").mkdir()
    redis = start_redis()
    redis_url = redis.url
    started = time.monotonic()
    results: dict[str, Any] = {
        "machine": machine(),
        "plan": {
            "sizes": plan.sizes,
            "systems": plan.systems,
            "rate": plan.rate,
            "latency_events": plan.latency_events,
            "saturation_events": {str(n): plan.saturation_for(n) for n in plan.sizes},
            "rss_size": plan.rss_size,
            "smoke": plan.smoke,
            "publishing": plan.publishing.__dict__ if plan.publishing else None,
            "stress": plan.stress,
            "stress_sizes": {
                "overload": [plan.overload_size, plan.overload_rate, plan.overload_seconds],
                "saturation": [plan.bulk_size, plan.bulk_events, plan.bulk_batch],
                "burst": [plan.burst_size, plan.burst_events],
            },
        },
        "cases": [],
        "publishing": [],
        "stress": [],
    }
    try:
        for system in chosen:
            var_dir = tmp / system.name
            var_dir.mkdir()
            if system.settings_module():
                migrate(system, child_env(redis_url, var_dir, system.settings_module()))
        if plan.publishing is not None:
            from bench.publishing import run_publishing

            peer = "eventstream" in plan.systems
            results["publishing"] = run_publishing(plan.publishing, redis_url, tmp, peer)
        for n in plan.sizes:
            for system in chosen:
                results["cases"].append(run_case(system, n, plan, redis_url, tmp))
        if plan.stress:
            from bench.stress import run_stress

            results["stress"] = run_stress(plan, chosen, redis_url, tmp)
        if plan.rss_size:
            for system in chosen:
                results["cases"].append(run_case(system, plan.rss_size, plan, redis_url, tmp, rss_only=True))
    finally:
        redis.stop()
    results["seconds"] = time.monotonic() - started
    results["logs"] = str(tmp.relative_to(ROOT))
    return results
