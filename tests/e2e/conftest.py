"""Fixtures of the end-to-end tests."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest


@pytest.fixture
async def browser() -> AsyncIterator[Any]:
    """Chromium, launched for one test (the browser tests: test_browser.py, test_htmx_turbo.py)."""
    # Imported here: importing tests.e2e.browser skips the importer where Chromium is missing.
    from tests.e2e.browser import launch

    async with launch() as chromium:
        yield chromium


@pytest.fixture
def viewport_height() -> int:
    """The height of `context`'s pages, in pixels (a test module may override it)."""
    return 760


@pytest.fixture
async def context(browser: Any, viewport_height: int) -> AsyncIterator[Any]:
    """A browser context 1000 pixels wide (the screenshots' width), in English, that
    waits up to 15 s for what a test awaits."""
    context = await browser.new_context(viewport={"width": 1000, "height": viewport_height}, locale="en-GB")
    context.set_default_timeout(15_000)
    yield context
    await context.close()
