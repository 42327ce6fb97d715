"""Real servers for the tests: a private redis-server and daphne processes."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

import httpx

from events.embedded_redis import redis_server_binary

ROOT = Path(__file__).resolve().parent.parent


def _die_with_parent() -> None:
    """Runs in the child before exec: ask Linux to SIGTERM it when the test process
    dies, so that a killed or crashed test run leaves no server behind."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass  # not Linux: the fixtures' own clean-up still applies


def spawn(args: list[str], log: IO[bytes] | None = None, **options: Any) -> subprocess.Popen[bytes]:
    """Start a process of the test's: no stdin, its output (stdout and stderr) into `log`
    when given, and ended by Linux if the test process dies. `options` go to Popen."""
    defaults: dict[str, Any] = {"stdin": subprocess.DEVNULL, "preexec_fn": _die_with_parent}
    if log is not None:
        defaults.update(stdout=log, stderr=subprocess.STDOUT)
    return subprocess.Popen(args, **{**defaults, **options})


def wait_healthy(
    url: str,
    process: subprocess.Popen[bytes],
    output: Callable[[], str],
    timeout: float = 30,
    name: str = "the server",
) -> None:
    """Return once GET `url`/healthz answers 200; RuntimeError, with what the process
    wrote, when it exits first or `timeout` passes."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{name} exited with {process.returncode}:\n{output()}")
        try:
            if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"{name} did not become healthy within {timeout} s:\n{output()}")


def end_process(process: subprocess.Popen[bytes], how: signal.Signals = signal.SIGTERM) -> None:
    """Send `how` and wait for the process to end; SIGKILL if it has not within 10 s."""
    process.send_signal(how)
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=10)


def command(
    args: list[str], cwd: Path, env: dict[str, str] | None, timeout: float
) -> subprocess.CompletedProcess[str]:
    """Run a command to its end, no stdin, its output captured as text."""
    return subprocess.run(
        args, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL
    )


def manage(env: dict[str, str], *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """`python manage.py ARGS` as its own process (a second shell), output captured."""
    return command([sys.executable, "manage.py", *args], ROOT, env, timeout)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class ServerProcess:
    """A process of the test's, which the test may stop (SIGTERM) or kill (SIGKILL)."""

    process: subprocess.Popen[bytes] | None = None

    def kill(self) -> None:
        """SIGKILL: no shutdown, no goodbye to clients, replicas or Sentinels."""
        if self.process is not None:
            end_process(self.process, signal.SIGKILL)
            self.process = None

    def stop(self) -> None:
        if self.process is not None:
            end_process(self.process)
            self.process = None


def redis_server_args(port: int, workdir: Path) -> list[str]:
    """A redis-server on loopback that keeps nothing on disk but its log, in `workdir`."""
    return [
        "--port",
        str(port),
        "--bind",
        "127.0.0.1",
        "--save",
        "",
        "--appendonly",
        "no",
        "--dir",
        str(workdir),
        "--logfile",
        str(workdir / "redis.log"),
    ]


class RedisServer(ServerProcess):
    """A redis-server of the tests' own on a free port, which tests may stop and restart."""

    def __init__(self) -> None:
        self.port = free_port()
        self.dir = tempfile.mkdtemp(prefix="events-test-redis-")
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.process = spawn([redis_server_binary(), *redis_server_args(self.port, Path(self.dir))])
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"redis-server exited with {self.process.returncode}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2) as sock:
                    sock.sendall(b"PING\r\n")
                    if sock.recv(16).startswith(b"+PONG"):
                        return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("redis-server did not start within 10 s")


class Daphne(ServerProcess):
    """A daphne process serving the project, on a free port."""

    def __init__(self, env: dict[str, str], port: int | None = None, nofile: int | None = None) -> None:
        self.port = port or free_port()
        self.env = env
        # A file descriptor limit (soft and hard) for the process, as a service manager sets it.
        self.nofile = nofile
        self.process: subprocess.Popen[bytes] | None = None
        # Kept after the process ends, so a failing test can show what daphne said.
        self.log = tempfile.NamedTemporaryFile(prefix="events-test-daphne-", suffix=".log", delete=False)  # noqa: SIM115

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 20.0) -> Daphne:
        command = [sys.executable, "-m", "daphne", "-b", "127.0.0.1", "-p", str(self.port)]
        self.process = spawn(
            [*command, "site_config.asgi:application"],
            self.log,
            cwd=ROOT,
            env=self.env,
            preexec_fn=self._limits,
        )
        try:
            wait_healthy(self.url, self.process, self.output, timeout, "daphne")
        except RuntimeError:
            self.stop()
            raise
        return self

    def _limits(self) -> None:
        """Runs in the child before exec."""
        _die_with_parent()
        if self.nofile is not None:
            import resource

            resource.setrlimit(resource.RLIMIT_NOFILE, (self.nofile, self.nofile))

    def output(self) -> str:
        return Path(self.log.name).read_text(errors="replace")
