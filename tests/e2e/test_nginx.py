"""The README's nginx recipe, run: its own block in front of two daphne processes.

The block is read from README.md (marked `<!-- deploy: nginx -->`), in the form for the
nginx at hand (`http2 on;` from 1.25.1, `listen ... http2` before), and served on a
loopback port over plain HTTP (TLS has nothing to do with streaming; the TLS form is
checked with `nginx -t` and a throwaway certificate). nginx is Debian's package:
installed when missing where the test may (root, apt-get), else the test is skipped.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import signal
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from asgiref.sync import sync_to_async

from events import send_event
from events.models import Event
from tests.e2e.sse_client import ResumingClient, Subscriber
from tests.servers import ROOT, Daphne, end_process, free_port, spawn

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

MARKER = "<!-- deploy: nginx -->"
HTTP2_DIRECTIVE_SINCE = (1, 25, 1)


# -- the README's block, in each form ------------------------------------------------


def readme_block() -> str:
    text = (ROOT / "README.md").read_text()
    start = text.index(MARKER) + len(MARKER)
    match = re.compile(r"\s*```nginx\n(.*?)```", re.DOTALL).match(text, start)
    assert match, f"no ```nginx block after {MARKER} in README.md"
    return match.group(1)


def _replace_line(block: str, line: str, new: str | None) -> str:
    """Replace (or with None, drop) the one line that is `line` without its indentation
    and trailing comment: the README must still have it, once."""
    lines = block.splitlines()
    found = [i for i, text in enumerate(lines) if re.sub(r"\s{2,}#.*$", "", text.strip()) == line]
    assert len(found) == 1, f"README's nginx block should have the line {line!r} once"
    indent = lines[found[0]][: len(lines[found[0]]) - len(lines[found[0]].lstrip())]
    if new is None:
        del lines[found[0]]
    else:
        lines[found[0]] = indent + new
    return "\n".join(lines) + "\n"


def http_directives(block: str) -> str:
    """What the block's comments say goes into http {} (the `limit_conn_zone` its
    `limit_conn` uses), as lines for that context."""
    found = re.findall(r"`(limit_conn_zone [^`]+;)` in http \{\}", block)
    return "".join(f"    {directive}\n" for directive in found)


def for_version(block: str, version: tuple[int, ...]) -> str:
    """The block as the README tells users of this nginx version to write it."""
    if version >= HTTP2_DIRECTIVE_SINCE:
        return _replace_line(block, "# listen 443 ssl http2;", None)
    block = _replace_line(block, "listen 443 ssl;", None)
    block = _replace_line(block, "http2 on;", None)
    return _replace_line(block, "# listen 443 ssl http2;", "listen 443 ssl http2;")


def with_certificate(block: str, cert: Path, key: Path) -> str:
    return _replace_line(
        block,
        "# ssl_certificate and ssl_certificate_key: yours",
        f"ssl_certificate {cert}; ssl_certificate_key {key};",
    )


def plain_http(block: str, port: int, upstreams: list[int]) -> str:
    """The README's block on 127.0.0.1:`port` over plain HTTP, proxying to `upstreams`.
    Everything else (the locations, buffering, timeouts, headers) stays as written."""
    block = _replace_line(block, "listen 443 ssl;", f"listen 127.0.0.1:{port};")
    block = _replace_line(block, "http2 on;", None)  # HTTP/2 in clear text is not what browsers speak
    block = _replace_line(block, "# listen 443 ssl http2;", None)
    servers = " ".join(f"server 127.0.0.1:{upstream};" for upstream in upstreams)
    readme_servers = "server 127.0.0.1:8001; server 127.0.0.1:8002; server 127.0.0.1:8003;"
    assert readme_servers in block
    return block.replace(readme_servers, servers)


def test_the_block_has_a_form_for_each_nginx_generation() -> None:
    block = readme_block()
    new, old = for_version(block, (1, 25, 1)), for_version(block, (1, 22, 1))
    assert "http2 on;" in new and "listen 443 ssl;" in new and "http2;" not in new.replace("http2 on;", "")
    assert "http2 on;" not in old and "listen 443 ssl http2;" in old and "listen 443 ssl;" not in old
    assert "proxy_buffering off;" in plain_http(block, 1234, [1, 2])
    if "limit_conn perip" in block:
        assert http_directives(block).strip().startswith("limit_conn_zone ")


# -- nginx ---------------------------------------------------------------------------


def _nginx_binary() -> str | None:
    return shutil.which("nginx") or next((p for p in ("/usr/sbin/nginx",) if os.access(p, os.X_OK)), None)


@pytest.fixture(scope="module")
def nginx() -> tuple[str, tuple[int, ...]]:
    """Debian's nginx: (binary, version)."""
    binary = _nginx_binary()
    if binary is None and shutil.which("apt-get") and os.geteuid() == 0:
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        install = ["apt-get", "install", "-y", "-q", "--no-install-recommends", "nginx"]
        for command in (install, ["apt-get", "update", "-q"], install):
            result = subprocess.run(command, env=env, capture_output=True, timeout=600)
            if command is install and result.returncode == 0:
                break
        binary = _nginx_binary()
    if binary is None:
        pytest.skip("nginx is not installed and cannot be here (apt-get install nginx needs root)")
    result = subprocess.run([binary, "-v"], capture_output=True, text=True, timeout=30)
    match = re.search(r"nginx/(\d+)\.(\d+)\.(\d+)", result.stderr + result.stdout)
    assert match, result.stderr
    return binary, tuple(int(part) for part in match.groups())


class Nginx:
    """An nginx master of the test's own: its own prefix, config, pid and logs."""

    def __init__(self, binary: str, server_block: str) -> None:
        self.binary = binary
        self.dir = Path(tempfile.mkdtemp(prefix="events-test-nginx-"))
        self.dir.chmod(0o755)  # the workers (nobody, under root) write their temp files here
        self.port = free_port()
        self.config = self.dir / "nginx.conf"
        self.config.write_text(
            "worker_processes 1;\n"
            f"pid {self.dir}/nginx.pid;\n"
            f"error_log {self.dir}/error.log warn;\n"
            "events { worker_connections 256; }\n"
            "http {\n"
            f"    access_log {self.dir}/access.log;\n"
            + "".join(
                f"    {kind}_temp_path {self.dir}/{kind}_temp;\n"
                for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
            )  # fmt: skip
            + http_directives(server_block)
            + server_block.replace("__PORT__", str(self.port))
            + "}\n"
        )
        self.process: subprocess.Popen[bytes] | None = None

    def check(self) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [self.binary, "-t", "-p", str(self.dir), "-c", str(self.config)],
            capture_output=True,
            text=True,
            timeout=30,
        )

    def start(self) -> Nginx:
        self.process = spawn(
            [self.binary, "-p", str(self.dir), "-c", str(self.config), "-g", "daemon off;"],
            stderr=subprocess.PIPE,
        )
        deadline = time.monotonic() + 10
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(f"nginx exited: {self.process.stderr.read().decode()}")  # type: ignore[union-attr]
            try:
                httpx.get(f"{self.url}/healthz", timeout=1)
                return self
            except httpx.HTTPError:
                if time.monotonic() > deadline:
                    raise RuntimeError("nginx did not answer within 10 s") from None
                time.sleep(0.05)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        if self.process is not None:
            end_process(self.process, signal.SIGQUIT)  # graceful: let the workers go
            self.process = None
        shutil.rmtree(self.dir, ignore_errors=True)


def test_the_block_for_this_nginx_passes_its_config_test(nginx, tmp_path: Path) -> None:
    """With TLS, as the README gives it for this version; and on nginx before 1.25.1
    the newer form is refused, as the README says."""
    binary, version = nginx
    key, cert = tmp_path / "server.key", tmp_path / "server.crt"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj",
         "/CN=events.example.com", "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    block = with_certificate(readme_block(), cert, key)
    # Port 443 stays as written: nginx -t parses and checks, and binds nothing.
    server = Nginx(binary, for_version(block, version))
    result = server.check()
    assert result.returncode == 0, result.stderr
    if version < HTTP2_DIRECTIVE_SINCE:
        newer = Nginx(binary, for_version(block, HTTP2_DIRECTIVE_SINCE)).check()
        assert newer.returncode != 0
        assert 'unknown directive "http2"' in newer.stderr


@pytest.fixture
def behind_nginx(nginx, server_env) -> Iterator[tuple[Nginx, list[Daphne]]]:
    binary, _ = nginx
    env = {**server_env, "DJANGO_SETTINGS_MODULE": "tests.e2e.settings_fast_heartbeat"}
    daphnes = [Daphne(env).start(), Daphne(env).start()]
    proxy = Nginx(binary, plain_http(readme_block(), 0, [d.port for d in daphnes]).replace(
        "listen 127.0.0.1:0;", "listen 127.0.0.1:__PORT__;"))  # fmt: skip
    try:
        yield proxy.start(), daphnes
    finally:
        proxy.stop()
        for daphne in daphnes:
            daphne.stop()


async def test_streams_through_the_readme_nginx(nginx, behind_nginx, server_env) -> None:
    """Events arrive at once, heartbeats pass, and a stream resumes with nothing lost
    when one daphne gets SIGTERM."""
    proxy, daphnes = behind_nginx
    name = f"nginx-{uuid.uuid4().hex[:10]}"
    token = server_env["EVENTS_PUBLISH_TOKEN"]

    async with httpx.AsyncClient(timeout=10) as http:

        async def publish(data: object) -> None:
            response = await http.post(
                f"{proxy.url}/events/{name}/",
                json={"data": data},
                headers={"Authorization": f"Bearer {token}"},
            )
            assert response.status_code == 201, response.text

        # At once: each event is read off the stream before the next is sent.
        async with Subscriber(f"{proxy.url}/events/{name}/") as stream:
            lags = []
            for n in range(5):
                sent = time.monotonic()
                await publish({"n": n})
                await stream.wait_for(n + 1, 5)
                lags.append(time.monotonic() - sent)
        assert [json.loads(e.data)["n"] for e in stream.events] == list(range(5))

        # Heartbeats pass: an idle stream keeps receiving its comments through nginx.
        beats, started = 0, time.monotonic()
        async with http.stream(
            "GET", f"{proxy.url}/events/{name}/", headers={"Last-Event-ID": f"{name}:5"}
        ) as raw:
            assert raw.headers["content-type"].startswith("text/event-stream")
            async for line in raw.aiter_lines():
                if line == ":":
                    beats += 1
                if beats >= 3 or time.monotonic() - started > 10:
                    break
        assert beats >= 3, "heartbeats did not come through nginx"

        # SIGTERM one daphne while streams run through nginx on both and events flow.
        clients = [ResumingClient([proxy.url], f"/events/{name}/", pause=0.2).start() for _ in range(4)]
        for client in clients:
            await client.wait_for(lambda events, c=client: c.last_id is not None, 10)
        # Published by the application (send_event), not over HTTP: nginx answers a POST
        # that meets the stopping daphne with 502 rather than pass it on (README).
        for n in range(5, 40):
            if n == 15:
                os.kill(daphnes[0].process.pid, signal.SIGTERM)  # type: ignore[union-attr]
            await sync_to_async(send_event)(name, {"n": n})
            await asyncio.sleep(0.05)
        for client in clients:
            await client.wait_for(lambda events: len(events) >= 35, 20)
        await asyncio.sleep(0.3)
        for client in clients:
            await client.stop()
    assert daphnes[0].process.wait(timeout=15) == 0  # type: ignore[union-attr]

    stored = await asyncio.to_thread(lambda: Event.objects.filter(channel=name).count())
    assert stored == 40
    for client in clients:
        # Every event after the one the client joined at, once, in order.
        assert [e.id for e in client.events] == [f"{name}:{seq}" for seq in range(6, 41)]
        assert [json.loads(e.data)["n"] for e in client.events] == list(range(5, 40))
    moved = sum(client.connections > 1 for client in clients)
    assert moved >= 1, "no stream was on the daphne that was stopped"
    print(
        f"nginx {'.'.join(map(str, nginx[1]))}: event lag through nginx "
        f"max {max(lags) * 1000:.0f} ms; {beats} heartbeats; {moved} of {len(clients)} streams "
        "resumed on the other daphne after SIGTERM, lost 0, duplicated 0"
    )
