"""No public key by default: with DEBUG off and no SECRET_KEY, nothing starts; `make
run` and the tests use a key of the checkout's own, kept under var/."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from tests.servers import ROOT, free_port, manage


def bare_env(var_dir: Path, **extra: str) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if key not in ("SECRET_KEY", "DEBUG")}
    return {**env, "VAR_DIR": str(var_dir), "DJANGO_SETTINGS_MODULE": "site_config.settings", **extra}


def printed_key(env: dict[str, str]) -> str:
    result = manage(env, "shell", "-c", "from django.conf import settings; print(settings.SECRET_KEY)")
    assert result.returncode == 0, result.stderr
    return result.stdout.strip().splitlines()[-1]


def test_manage_py_refuses_without_a_key(tmp_path) -> None:
    result = manage(bare_env(tmp_path, DEBUG="0"), "check")
    assert result.returncode != 0
    assert result.stderr.startswith("error: SECRET_KEY is not set")
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert not (tmp_path / "secret_key").exists()


def test_daphne_refuses_to_start_without_a_key(tmp_path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "daphne", "-p", str(free_port()), "site_config.asgi:application"],
        cwd=ROOT,
        env=bare_env(tmp_path, DEBUG="0"),
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
    )
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith("error: SECRET_KEY is not set")


def test_environment_key_is_used(tmp_path) -> None:
    assert printed_key(bare_env(tmp_path, DEBUG="0", SECRET_KEY="k" * 50)) == "k" * 50


def test_debug_writes_a_private_key_once_and_keeps_it(tmp_path) -> None:
    env = bare_env(tmp_path, DEBUG="1")
    first = printed_key(env)
    key_file = tmp_path / "secret_key"
    assert len(first) >= 50 and key_file.read_text().strip() == first
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert printed_key(env) == first
    # Once written (by DEBUG, or by `make run`), processes with DEBUG off use it too:
    # `manage.py send_event` from a second shell, the server `make run` starts.
    assert printed_key(bare_env(tmp_path, DEBUG="0")) == first


@pytest.mark.skipif(not Path("/usr/bin/make").exists(), reason="no make")
def test_make_writes_the_development_key(tmp_path) -> None:
    var_dir = tmp_path / "var"
    result = subprocess.run(
        ["make", "-s", f"VAR_DIR={var_dir}", f"{var_dir}/secret_key"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    key = (var_dir / "secret_key").read_text().strip()
    assert len(key) >= 50
    assert stat.S_IMODE((var_dir / "secret_key").stat().st_mode) == 0o600
    assert printed_key(bare_env(var_dir, DEBUG="0")) == key


def test_check_deploy_fails_on_the_development_key(tmp_path) -> None:
    (tmp_path / "secret_key").write_text("d" * 60)
    result = manage(bare_env(tmp_path, DEBUG="0"), "check", "--deploy", "--fail-level", "WARNING")
    assert result.returncode != 0
    assert "events.W008" in result.stderr + result.stdout
