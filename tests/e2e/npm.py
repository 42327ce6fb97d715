"""The browser libraries the htmx and Turbo tests load, installed from npm.

`tests/e2e/npm/package.json` pins them and `package-lock.json` locks them; `npm ci`
installs them into `var/npm/<hash of the lock>/node_modules` once, and later runs
reuse that directory. Nothing is vendored into the repository or fetched from a CDN
while the tests run.
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import tempfile
from pathlib import Path

from tests.servers import ROOT

PACKAGE_DIR = Path(__file__).resolve().parent / "npm"
CACHE = ROOT / "var" / "npm"
INSTALL_TIMEOUT_SECONDS = 300


class NpmMissing(RuntimeError):
    """No npm on this machine: the tests that need it are skipped."""


class NpmFailed(RuntimeError):
    """npm is there but the install failed (a registry that does not answer)."""


def install() -> Path:
    """The node_modules directory holding the locked packages, installed if need be."""
    npm = shutil.which("npm")
    if npm is None:
        raise NpmMissing(
            "htmx and Turbo browser tests skipped: npm is not installed "
            "(Debian: apt-get install -y npm); they install htmx, htmx-ext-sse and @hotwired/turbo with it"
        )
    lock = (PACKAGE_DIR / "package-lock.json").read_bytes()
    target = CACHE / hashlib.sha256(lock).hexdigest()[:16]
    modules = target / "node_modules"
    if (target / ".installed").exists():
        return modules
    CACHE.mkdir(parents=True, exist_ok=True)
    # Installed beside the final place, then renamed: a run killed half-way, or two
    # runs at once, never leave a half-installed directory that looks complete.
    work = Path(tempfile.mkdtemp(prefix="install-", dir=CACHE))
    for name in ("package.json", "package-lock.json"):
        shutil.copy(PACKAGE_DIR / name, work / name)
    result = subprocess.run(
        [npm, "ci", "--ignore-scripts", "--no-audit", "--no-fund", "--loglevel=error"],
        cwd=work,
        capture_output=True,
        text=True,
        timeout=INSTALL_TIMEOUT_SECONDS,
        stdin=subprocess.DEVNULL,
    )
    if result.returncode != 0:
        shutil.rmtree(work, ignore_errors=True)
        raise NpmFailed(
            f"npm ci failed in {PACKAGE_DIR} (exit {result.returncode}):\n{result.stderr[-2000:]}"
        )
    (work / ".installed").touch()
    try:
        work.rename(target)
    except OSError:  # another run got there first
        shutil.rmtree(work, ignore_errors=True)
    return modules
