"""A private PostgreSQL cluster for the tests that stop and restart the database."""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import subprocess
import tempfile
from pathlib import Path

from tests.servers import free_port


def postgres_bin() -> Path | None:
    """The directory holding initdb and pg_ctl, or None."""
    found = shutil.which("initdb")
    candidates = [found] if found else []
    candidates += sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), reverse=True)
    candidates += ["/usr/local/bin/initdb", "/usr/local/pgsql/bin/initdb"]
    for initdb in candidates:
        path = Path(initdb)
        if path.is_file() and (path.parent / "pg_ctl").exists():
            return path.parent
    return None


def _unprivileged_user() -> str | None:
    """initdb and postgres refuse to run as root: as root, run them as this user."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "nobody"):
        try:
            pwd.getpwnam(name)
        except KeyError:
            continue
        return name
    raise RuntimeError("running as root, and no 'postgres' or 'nobody' user to run PostgreSQL as")


class PostgresServer:
    """initdb'd into a temporary directory, on a free port of 127.0.0.1, trust auth."""

    def __init__(self, bin_dir: Path) -> None:
        self.bin = bin_dir
        self.port = free_port()
        self.dir = tempfile.mkdtemp(prefix="events-test-postgres-")
        self.user = _unprivileged_user()
        if self.user is not None:
            entry = pwd.getpwnam(self.user)
            os.chown(self.dir, entry.pw_uid, entry.pw_gid)
        self.data = os.path.join(self.dir, "data")
        self.log = os.path.join(self.dir, "postgres.log")

    def url(self, database: str) -> str:
        return f"postgres://postgres@127.0.0.1:{self.port}/{database}"

    def _run(self, *args: str, timeout: float = 60) -> None:
        result = subprocess.run(
            [str(self.bin / args[0]), *args[1:]],
            user=self.user,
            cwd=self.dir,
            capture_output=True,
            text=True,
            timeout=timeout,
            stdin=subprocess.DEVNULL,
        )
        if result.returncode:
            raise RuntimeError(f"{args[0]} failed ({result.returncode}): {result.stderr or result.stdout}")

    def init(self) -> None:
        self._run("initdb", "-D", self.data, "-U", "postgres", "--auth=trust", "--no-sync", "-E", "UTF8")

    def start(self) -> None:
        options = f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 -c fsync=off"
        self._run("pg_ctl", "start", "-D", self.data, "-l", self.log, "-o", options, "-w", "-t", "30")

    def stop(self, mode: str = "fast") -> None:
        self._run("pg_ctl", "stop", "-D", self.data, "-m", mode, "-w", "-t", "30")

    def create_database(self, name: str) -> None:
        import psycopg

        with psycopg.connect(self.url("postgres"), autocommit=True, connect_timeout=10) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')

    def remove(self) -> None:
        with contextlib.suppress(RuntimeError, subprocess.TimeoutExpired):  # not running
            self.stop("immediate")
        shutil.rmtree(self.dir, ignore_errors=True)
