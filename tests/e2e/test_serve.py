"""`manage.py serve` (what `make run` runs) with no REDIS_URL: the embedded Redis.

README "Which Redis is used": with no REDIS_URL set, `make run` needs no separate Redis install, and an event
published from a second shell (`manage.py send_event`, a separate process) still reaches
the browsers of the running server.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import sys
import uuid
from pathlib import Path

import httpx
import pytest

from tests.e2e.sse_client import Subscriber
from tests.servers import ROOT, free_port, manage, spawn, wait_healthy
from tests.streams import channel

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


def embedded_env(server_env: dict[str, str], var_dir: Path, port: int) -> dict[str, str]:
    env = {key: value for key, value in server_env.items() if key not in ("REDIS_URL", "TEST_REDIS_URL")}
    return {**env, "VAR_DIR": str(var_dir), "PORT": str(port)}


async def test_embedded_redis_carries_events_from_another_process(server_env, tmp_path) -> None:
    # A short directory: a unix socket path must stay under about 100 bytes.
    var_dir = Path(os.environ.get("TMPDIR", "/tmp")) / f"ev-{uuid.uuid4().hex[:8]}"
    port = free_port()
    env = embedded_env(server_env, var_dir, port)
    log = tmp_path / "serve.log"
    url = f"http://127.0.0.1:{port}"
    with log.open("wb") as out:
        serve = spawn([sys.executable, "manage.py", "serve"], out, cwd=ROOT, env=env)
    try:
        await asyncio.to_thread(wait_healthy, url, serve, log.read_text, 30, "serve")
        banner = log.read_text()
        assert f"Redis: embedded, on unix://{var_dir}/redis.sock" in banner
        assert f"Feed page:  {url}/feed/" in banner

        name = channel("e2e")
        async with Subscriber(f"{url}/events/{name}/") as subscriber:
            # A second shell: its own process, finding the embedded Redis through VAR_DIR.
            result = await asyncio.to_thread(manage, env, "send_event", name, '{"from": "second shell"}')
            assert result.returncode == 0, result.stderr
            [event] = await subscriber.wait_for(1)
        assert (event.id, json.loads(event.data)) == (f"{name}:1", {"from": "second shell"})

        # A second server on the same port: one line and a non-zero exit, nothing disturbed.
        again = await asyncio.to_thread(manage, env, "serve")
        assert again.returncode == 1
        assert f"cannot listen on 127.0.0.1:{port}" in again.stderr
        assert "Traceback" not in again.stderr
        assert httpx.get(f"{url}/healthz", timeout=5).status_code == 200
    finally:
        serve.send_signal(signal.SIGTERM)
        returncode = serve.wait(timeout=20)
        socket_left = (var_dir / "redis.sock").exists()
        shutil.rmtree(var_dir, ignore_errors=True)
    assert returncode == 0, log.read_text()
    # The embedded Redis stopped with the server.
    assert not socket_left
