"""The feed page and the admin in a real browser: Playwright driving Chromium against
real daphne processes, Redis and the test database.

Skipped, with the reason, only when no Chromium can be found (`.ci/run` installs
Debian's `chromium` when it is missing). The first test saves the screenshot that the
README shows: to docs/feed.png when that is missing or UPDATE_SCREENSHOTS=1, else to
var/feed.png, so that a test run does not rewrite a committed file.

Playwright's async API: its sync API runs an event loop in the test's thread, where
Django then refuses ORM calls (SynchronousOnlyOperation), the test database's flush too.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import time
from pathlib import Path

import pytest
from asgiref.sync import sync_to_async

from demo.models import Order
from events import asend_event, presence, sse
from tests.e2e.browser import CHROMIUM  # noqa: F401  (the import skips this module where Chromium is missing)
from tests.servers import ROOT, Daphne, free_port
from tests.streams import channel

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

SCREENSHOT = ROOT / "docs" / "feed.png"
PASSWORD = "browser-test-pw-1"
EVENT = "li.event"


@pytest.fixture
def staff(django_user_model):
    return django_user_model.objects.create_user(
        "editor", password=PASSWORD, is_staff=True, is_superuser=True
    )


async def open_feed(context, base: str, query: str):
    page = await context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    await page.goto(f"{base}/feed/?{query}")
    await page.wait_for_selector("#state[data-state=live]")
    page.errors = errors  # checked by the tests: no script error on the page
    return page


async def events_on(page) -> list[dict]:
    """The feed's items, newest first: type, channel, id and the payload's text."""
    return await page.eval_on_selector_all(
        EVENT,
        """items => items.map(li => ({
            type: li.dataset.type, channel: li.dataset.channel, id: li.dataset.id,
            payload: li.querySelector("pre.payload").textContent}))""",
    )


async def wait_for_items(page, count: int, timeout: float = 15.0) -> list[dict]:
    # A locator, not wait_for_function: polling a string expression is an eval, which
    # the page's Content-Security-Policy refuses.
    await page.locator(EVENT).nth(count - 1).wait_for(state="attached", timeout=timeout * 1000)
    return await events_on(page)


async def save_screenshot(page) -> Path:
    wanted = os.environ.get("UPDATE_SCREENSHOTS") == "1" or not SCREENSHOT.exists()
    path = SCREENSHOT if wanted else ROOT / "var" / "feed.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    await page.screenshot(path=str(path))
    return path


async def test_admin_action_appears_on_the_feed(context, daphne: Daphne, staff) -> None:
    """Open the feed, log into the admin in another page, run the demo Order action: the
    event appears on the feed, with its type, channel, time and pretty-printed payload."""
    await asend_event("public", {"sent": "before the page opened"})
    order = await sync_to_async(Order.objects.create)(
        customer="Ada Lovelace", status=Order.Status.PAID, total=42
    )
    feed = await open_feed(context, daphne.url, "channel=orders&channel=public")
    assert await feed.inner_text("#since") == "No events yet"

    admin = await context.new_page()
    await admin.goto(f"{daphne.url}/admin/login/?next=/admin/demo/order/")
    await admin.fill("#id_username", "editor")
    await admin.fill("#id_password", PASSWORD)
    await admin.click("input[type=submit]")
    await admin.wait_for_url(re.compile(r"/admin/demo/order/$"))
    await admin.check(f"input[name=_selected_action][value='{order.pk}']")
    await admin.select_option("select[name=action]", "broadcast_order_status")
    await admin.click("button[name=index]")
    await admin.wait_for_selector("text=Sent 1 event(s) as 'order-status'.")

    # order-status was never sent before: the page learns the new type and replays it.
    await feed.wait_for_selector(f'{EVENT}[data-type="order-status"]')
    newest = (await events_on(feed))[0]
    assert newest["type"] == "order-status" and newest["channel"] == "orders"
    assert json.loads(newest["payload"]) == {"id": order.pk, "customer": "Ada Lovelace", "status": "paid"}
    assert '\n  "customer": "Ada Lovelace",\n' in newest["payload"]  # pretty-printed
    assert await feed.locator(f'{EVENT}[data-type="order-status"] time').get_attribute("datetime")
    assert re.fullmatch(r"Last event \d+ s ago", await feed.inner_text("#since"))

    # More to look at in the README's screenshot: two channels, a long payload folded.
    await asend_event("public", {"hello": "world"})
    await asend_event(
        "orders", {"id": order.pk, "status": "shipped", "carrier": "Royal Mail"}, event="order-shipped"
    )
    lines = [
        {"sku": f"BOOK-{n:03d}", "title": f"Notes on the Analytical Engine, vol. {n}"} for n in range(12)
    ]
    await asend_event("orders", {"id": order.pk, "lines": lines}, event="order-lines")
    await feed.wait_for_selector(f'{EVENT}[data-type="order-lines"] details.fold')
    folded = feed.locator(f'{EVENT}[data-type="order-lines"] details.fold')
    assert not await folded.evaluate("details => details.open")
    assert "lines" in await folded.locator("summary").inner_text()
    items = await events_on(feed)
    assert [(item["type"], item["channel"]) for item in items] == [
        ("order-lines", "orders"),
        ("order-shipped", "orders"),
        ("message", "public"),
        ("order-status", "orders"),
    ]  # and not what was sent before the page opened
    assert feed.errors == []
    await feed.mouse.move(0, 0)
    path = await save_screenshot(feed)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


# For the tests that restart daphne: the page is told to come back after the usual
# retry plus at most half a second, not the production spread of up to 10 s.
QUICK_RETURN = {"EVENTS_SHUTDOWN_RETRY_SPREAD_MS": "500"}


async def test_feed_reconnects_after_a_restart_and_shows_what_was_missed(context, server_env) -> None:
    server = await asyncio.to_thread(Daphne({**server_env, **QUICK_RETURN}, port=free_port()).start)
    name = channel()
    try:
        feed = await open_feed(context, server.url, f"channel={name}")
        await asend_event(name, {"n": 1})
        await wait_for_items(feed, 1)

        await asyncio.to_thread(server.stop)
        await feed.wait_for_selector("#state[data-state=reconnecting]")
        assert re.fullmatch(r"Last event \d+ s ago", await feed.inner_text("#since"))
        # Published while no server runs: stored, broadcast to nobody.
        await asend_event(name, {"n": 2})
        await asend_event(name, {"n": 3}, event="while-down")
        await asyncio.to_thread(server.start)

        # The browser reconnects by itself (after the retry the server handed out at
        # shutdown) and resumes with Last-Event-ID.
        await wait_for_items(feed, 3, timeout=45)
        await feed.wait_for_selector("#state[data-state=live]")
        await asend_event(name, {"n": 4})
        items = await wait_for_items(feed, 4)
    finally:
        await asyncio.to_thread(server.stop)
    assert [json.loads(item["payload"])["n"] for item in items] == [4, 3, 2, 1]
    assert [item["id"] for item in items] == [f"{name}:{n}" for n in (4, 3, 2, 1)]
    assert [item["type"] for item in items] == ["message", "while-down", "message", "message"]
    assert await feed.is_hidden("#notice")  # nothing was lost, so no reset notice
    assert feed.errors == []


async def wait_for_count(name: str, expected: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        got = (await asyncio.to_thread(presence.counts))["channels"].get(name, 0)
        if got == expected:
            return
        assert time.monotonic() < deadline, f"{got} streams open on {name}, expected {expected}"
        await asyncio.sleep(0.05)


async def test_tabs_share_one_stream(context, daphne: Daphne) -> None:
    """Two tabs of the same channels use one connection (a SharedWorker); ?shared=0
    gives a tab its own. Counted by the server's subscriber counts."""
    name = channel()
    first = await open_feed(context, daphne.url, f"channel={name}")
    second = await open_feed(context, daphne.url, f"channel={name}")
    for page in (first, second):
        await page.wait_for_selector("#mode:text('One connection shared by 2 tabs')")
    await wait_for_count(name, 1)

    own = await open_feed(context, daphne.url, f"channel={name}&shared=0")
    assert await own.inner_text("#mode") == "Own connection"
    await wait_for_count(name, 2)

    await asend_event(name, {"to": "every tab"})
    for page in (first, second, own):
        [item] = await wait_for_items(page, 1)
        assert json.loads(item["payload"]) == {"to": "every tab"}

    for page in (own, second, first):
        await page.close()
    await wait_for_count(name, 0)


async def test_keyboard_pause_fold_and_skip_link(context, daphne: Daphne) -> None:
    name = channel()
    feed = await open_feed(context, daphne.url, f"channel={name}")
    await feed.keyboard.press("Tab")
    assert await feed.evaluate("document.activeElement.textContent") == "Skip to the events"

    await feed.focus("#pause")
    await feed.keyboard.press("Space")
    assert await feed.get_attribute("#pause", "aria-pressed") == "true"
    await asend_event(name, {"held": True})
    await feed.wait_for_selector("#pause:text('Resume (1 new)')")
    assert await events_on(feed) == []
    await feed.keyboard.press("Enter")
    assert await feed.get_attribute("#pause", "aria-pressed") == "false"
    [item] = await wait_for_items(feed, 1)
    assert json.loads(item["payload"]) == {"held": True}

    await asend_event(name, {"long": "x" * 2000})
    await feed.wait_for_selector(f"{EVENT} details.fold")
    await feed.focus(f"{EVENT} details.fold summary")
    await feed.keyboard.press("Enter")
    assert await feed.eval_on_selector(f"{EVENT} details.fold", "details => details.open")
    # One polite summary for screen readers, not the whole payload.
    await (
        feed.locator("#announcer").filter(has_text=re.compile(".")).wait_for(state="attached", timeout=10_000)
    )
    assert await feed.inner_text("#announcer") in {f"New message event on {name}", "2 new events"}
    assert feed.errors == []


async def test_stream_reset_shows_a_notice(context, daphne: Daphne) -> None:
    """A position the server cannot honour (here: ahead of the channel, as after a
    database restore) is answered with `stream-reset`, and the page says so."""
    name = channel()
    await asend_event(name, 1)
    page = await context.new_page()

    async def rewrite(route) -> None:
        response = await route.fetch()
        body = (await response.text()).replace(f'"position": "{name}:1"', f'"position": "{name}:99"')
        await route.fulfill(response=response, body=body)

    await page.route(re.compile(r"/feed/\?"), rewrite)
    await page.goto(f"{daphne.url}/feed/?channel={name}")
    await page.wait_for_selector("#notice:not([hidden])")
    assert await page.get_attribute("#notice", "role") == "alert"
    assert "could not be replayed" in await page.inner_text("#notice")
    assert "unknown id" in await page.inner_text("#notice")
    [item] = await wait_for_items(page, 1)
    assert item["type"] == "stream-reset"
    # And it goes on live from the server's position.
    await asend_event(name, 2)
    items = await wait_for_items(page, 2)
    assert items[0]["id"] == f"{name}:2"


async def test_readable_on_a_phone(browser, daphne: Daphne) -> None:
    context = await browser.new_context(
        viewport={"width": 360, "height": 740}, is_mobile=True, has_touch=True
    )
    try:
        name = channel()
        feed = await open_feed(context, daphne.url, f"channel={name}")
        await asend_event(
            name, {"url": "https://example.com/" + "a" * 300, "nested": {"deep": list(range(30))}}
        )
        await wait_for_items(feed, 1)
        width = await feed.evaluate("[document.documentElement.scrollWidth, window.innerWidth]")
        assert width[0] <= width[1], f"the page scrolls sideways: {width}"
        font = await feed.eval_on_selector(
            f"{EVENT} .type", "node => parseFloat(getComputedStyle(node).fontSize)"
        )
        assert font >= 14
    finally:
        await context.close()


async def test_large_payloads_show_raw_and_cut_until_asked(context, daphne: Daphne) -> None:
    """Only small payloads are pretty-printed: a large deep one is shown raw, cut, and
    whole on demand (pretty-printing 64 KB deep payloads cost gigabytes)."""
    name = channel()
    page = await open_feed(context, daphne.url, f"channel={name}")
    deep: object = 0
    for _ in range(400):
        deep = [deep]
    large = {"deep": deep, "pad": "x" * 20_000}
    await asend_event(name, {"small": [1, 2]})
    await asend_event(name, large)
    newest, oldest = await wait_for_items(page, 2)
    assert oldest["payload"] == '{\n  "small": [\n    1,\n    2\n  ]\n}'  # pretty
    raw = sse.dumps(large)
    assert newest["payload"] == raw[:2000] + "…"  # raw, cut
    await page.click(f"{EVENT} >> nth=0 >> summary")
    await page.click(f"{EVENT} >> nth=0 >> button.show-all")
    [whole] = [item["payload"] for item in await events_on(page)][:1]
    assert whole == raw
    assert page.errors == []
