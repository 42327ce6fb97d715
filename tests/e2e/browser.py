"""Chromium driven by Playwright, for the browser tests (test_browser.py, test_htmx_turbo.py).

Importing this module skips the importing test module, with the reason, when Playwright
or Chromium is missing (`.ci/run` installs Debian's `chromium` when it is missing).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest

async_api = pytest.importorskip("playwright.async_api", reason="the playwright package is not installed")


def find_chromium() -> str | None:
    candidates = [os.environ.get("CHROMIUM"), "/usr/bin/chromium"]
    candidates += [shutil.which(name) for name in ("chromium", "chromium-browser", "google-chrome")]
    return next((path for path in candidates if path and os.access(path, os.X_OK)), None)


CHROMIUM = find_chromium()
if CHROMIUM is None:
    pytest.skip(
        "browser tests skipped: no Chromium found at /usr/bin/chromium, on PATH or in $CHROMIUM "
        "(Debian: apt-get install -y chromium; .ci/run does this when it runs as root)",
        allow_module_level=True,
    )

# As root in a container, with no GPU and a closed network (no calls home).
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


@asynccontextmanager
async def launch() -> AsyncIterator[Any]:
    """Chromium, for one test: the `browser` fixture (tests/e2e/conftest.py)."""
    async with async_api.async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield browser
        await browser.close()
