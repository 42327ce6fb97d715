"""The publishing section: how fast each system stores and broadcasts events.

Each case is its own process (bench/pubload.py, bench/postload.py), pinned to the client
core; Redis and the HTTP case's daphne are on the server core. Our cases run on SQLite
and, when it answers (BENCH_POSTGRES_URL, by default the local server as `postgres`), on
PostgreSQL in a database made for the run and dropped after it; django-eventstream's
send_event runs with its DjangoModelStorage on the same databases, and without storage
(its Redis publish alone). Cases are interleaved per database: ours, then the peer.
"""

from __future__ import annotations

import json
import os
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.run import (
    CLIENT_CPU,
    PEER_VENV,
    ROOT,
    Server,
    child_env,
    client_python,
    migrate,
    pinned,
    systems,
)

POSTGRES_ADMIN_URL = os.environ.get("BENCH_POSTGRES_URL", "postgres://postgres@127.0.0.1:5432/postgres")
TOKEN = "bench-publish-token-0123456789abcdef"
CASE_TIMEOUT = 300


@dataclass
class PublishPlan:
    events: int = 2000  # per send_event / asend_event case
    bulk_events: int = 10_000  # per send_events case of batch 10 and 100
    peer_stored_events: int = 500  # django-eventstream with storage is slow: fewer
    peer_events: int = 3000
    http_requests: int = 2000
    http_batch_requests: int = 100
    http_concurrency: int = 8
    postgres: bool = True
    # Each path once (send_event, asend_event from 10 coroutines, send_events in lists
    # of 100): the smoke run checks that every path delivers, not how they compare.
    one_case_per_path: bool = False


SMOKE_PUBLISH_PLAN = PublishPlan(
    events=60,
    bulk_events=200,
    peer_stored_events=0,
    peer_events=0,
    http_requests=40,
    http_batch_requests=4,
    http_concurrency=4,
    postgres=False,
    one_case_per_path=True,
)


def _postgres(name: str) -> str | None:
    """A fresh database on the benchmark's PostgreSQL, or None when it does not answer."""
    try:
        import psycopg
    except ImportError:
        return None
    try:
        with psycopg.connect(POSTGRES_ADMIN_URL, autocommit=True, connect_timeout=3) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}"')
            conn.execute(f'CREATE DATABASE "{name}"')
    except Exception as exc:
        print(f"   PostgreSQL at {POSTGRES_ADMIN_URL} not used: {exc}".splitlines()[0], flush=True)
        return None
    return POSTGRES_ADMIN_URL.rsplit("/", 1)[0] + "/" + name


def _drop(url: str) -> None:
    import psycopg

    name = url.rsplit("/", 1)[1]
    with psycopg.connect(POSTGRES_ADMIN_URL, autocommit=True, connect_timeout=3) as conn:
        conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE datname = %s AND pid <> pg_backend_pid()",
            [name],
        )
        conn.execute(f'DROP DATABASE IF EXISTS "{name}"')


def _child(python: Path, args: list[str], env: dict[str, str], log: Path) -> dict[str, Any]:
    with log.open("ab") as err:
        completed = subprocess.run(
            pinned(CLIENT_CPU, [str(python), *args]),
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=err,
            timeout=CASE_TIMEOUT,
            check=False,
        )
    lines = completed.stdout.decode().strip().splitlines()
    if completed.returncode or not lines:
        raise RuntimeError(f"{' '.join(args[:4])} failed ({completed.returncode}); see {log}")
    result: dict[str, Any] = json.loads(lines[-1])
    return result


def _print(row: dict[str, Any]) -> None:
    extra = ""
    if "lost" in row:
        extra = (
            f"; at Redis p50 {row['arrival_ms']['p50']:.2f} ms, lost {row['lost']}, dup {row['duplicated']}"
        )
    if "statuses" in row:
        extra = f"; statuses {row['statuses']}"
    print(
        f"   {row['label']}: {row['events_per_second']:,.0f} events/s; "
        f"call p50 {row['call_ms']['p50']:.2f} ms p99 {row['call_ms']['p99']:.2f} ms{extra}",
        flush=True,
    )


def run_publishing(plan: PublishPlan, redis_url: str, tmp: Path, peer: bool) -> list[dict[str, Any]]:
    """Every publishing case; rows in the order of the report's table."""
    print("-- publishing", flush=True)
    logs = tmp / "logs"
    ours_python = systems()["ours"].python
    peer_python = PEER_VENV / "bin" / "python"
    rows: list[dict[str, Any]] = []
    databases: list[tuple[str, dict[str, str], dict[str, str]]] = []
    created: list[str] = []
    try:
        sqlite_dir = tmp / "publishing"
        sqlite_dir.mkdir(exist_ok=True)
        ours_env = child_env(redis_url, sqlite_dir, "bench.ours_settings")
        ours_env["DATABASE_URL"] = f"sqlite:///{sqlite_dir / 'ours.sqlite3'}"
        peer_env = child_env(redis_url, sqlite_dir, "bench.peer_site.settings")
        databases.append(("SQLite", ours_env, peer_env))
        if plan.postgres:
            ours_pg = _postgres(f"bench_pub_ours_{os.getpid()}")
            peer_pg = _postgres(f"bench_pub_peer_{os.getpid()}") if ours_pg and peer else None
            created += [url for url in (ours_pg, peer_pg) if url]
            if ours_pg:
                pg_env = {**ours_env, "DATABASE_URL": ours_pg}
                databases.append(("PostgreSQL", pg_env, {**peer_env, "PEER_DATABASE_URL": peer_pg or ""}))
        for db, env, penv in databases:
            migrate(systems()["ours"], env)
            if peer and (db == "SQLite" or penv.get("PEER_DATABASE_URL")):
                migrate(systems()["eventstream"], penv)

        def ours(db: str, env: dict[str, str], label: str, *args: Any) -> None:
            row = _child(
                ours_python, ["-m", "bench.pubload", "ours", *map(str, args)], env, logs / "publish-ours.log"
            )
            rows.append({**row, "db": db, "label": label})
            _print(rows[-1])

        def theirs(db: str, env: dict[str, str], label: str, system: str, count: int) -> None:
            row = _child(
                peer_python,
                ["-m", "bench.pubload", system, "send_event", str(count)],
                env,
                logs / "publish-peer.log",
            )
            rows.append({**row, "db": db, "label": label})
            _print(rows[-1])

        for db, env, penv in databases:
            ours(db, env, f"send_event ({db})", "send_event", plan.events)
            if not plan.one_case_per_path:
                ours(db, env, f"asend_event, 1 coroutine ({db})", "asend_event", plan.events, 1, 1)
            ours(db, env, f"asend_event, 10 coroutines ({db})", "asend_event", plan.events, 1, 10)
            for batch in (100,) if plan.one_case_per_path else (1, 10, 100):
                count = plan.events if batch == 1 else plan.bulk_events
                ours(db, env, f"send_events, lists of {batch} ({db})", "send_events", count, batch)
            if peer and plan.peer_stored_events and (db == "SQLite" or penv.get("PEER_DATABASE_URL")):
                label = f"django-eventstream send_event, DjangoModelStorage ({db})"
                theirs(db, penv, label, "eventstream", plan.peer_stored_events)
        if peer and plan.peer_events:
            theirs(
                "-",
                databases[0][2],
                "django-eventstream send_event, no storage",
                "eventstream-nostore",
                plan.peer_events,
            )
        rows += _http(plan, redis_url, tmp)
    finally:
        for url in created:
            try:
                _drop(url)
            except Exception as exc:
                print(f"   could not drop {url}: {exc}", flush=True)
    return rows


def _http(plan: PublishPlan, redis_url: str, tmp: Path) -> list[dict[str, Any]]:
    """POST /events/<channel>/ and POST /events/ (lists of 100) to one daphne (SQLite)."""
    var_dir = tmp / "publishing-http"
    var_dir.mkdir(exist_ok=True)
    env = child_env(redis_url, var_dir, "bench.ours_settings")
    env["EVENTS_PUBLISH_TOKEN"] = TOKEN
    system = systems()["ours"]
    migrate(system, env)
    server = Server(system, env, tmp / "logs" / "publish-http-server.log")
    rows = []
    try:
        cases = [
            ("POST /events/<channel>/ (SQLite, 1 daphne)", "/events/bench-post/", plan.http_requests, 0),
            ("POST /events/, lists of 100 (SQLite, 1 daphne)", "/events/", plan.http_batch_requests, 100),
        ]
        for label, path, requests, batch in cases:
            args = [
                "-m",
                "bench.postload",
                "127.0.0.1",
                str(server.port),
                path,
                TOKEN,
                str(requests),
                str(plan.http_concurrency),
                str(batch),
            ]
            row = _child(client_python(), args, env, tmp / "logs" / "publish-http-client.log")
            rows.append(
                {**row, "db": "SQLite", "label": label, "system": "ours", "case": "http", "batch": batch}
            )
            _print(rows[-1])
    finally:
        server.stop()
    return rows
