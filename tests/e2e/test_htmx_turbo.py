"""HTML over the stream with the real libraries in Chromium: htmx 2 with htmx-ext-sse,
and Turbo Streams, fed by send_html and broadcast_on_save(template=...).

The libraries come from npm (tests/e2e/npm.py: `npm ci` of a pinned lock into var/npm),
never from a CDN. The test pages are served by Playwright's routing, either on the
daphne origin (same origin) or on http://localhost:<port> (another origin, with a subscribe
token and EVENTS_CREDENTIALED_ORIGINS). The demo page (/demo/) is the product's own, served
by daphne with its static copy of htmx; its test saves docs/htmx-demo.png.
"""

from __future__ import annotations

import asyncio
import contextlib
import mimetypes
import os
import threading
from collections.abc import Iterator
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import NamedTuple
from urllib.parse import parse_qs, urlsplit

import pytest
from asgiref.sync import sync_to_async
from django.db.models.signals import post_delete, post_save

from demo.models import Order
from events import asend_html
from events.signals import broadcast_on_save
from events.tokens import make_token
from tests.e2e.browser import async_api
from tests.e2e.npm import NpmMissing, install
from tests.e2e.test_browser import QUICK_RETURN, wait_for_count
from tests.servers import ROOT, Daphne, free_port
from tests.streams import channel

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

# The other origin: a server of the test's own on loopback, as the stream is (Chromium
# refuses a public page's requests to loopback: Private Network Access), named by
# another host than the stream's 127.0.0.1.
APP_PORT = free_port()
APP = f"http://localhost:{APP_PORT}"
TEMPLATES = Path(__file__).resolve().parent / "templates"
SCREENSHOT = ROOT / "docs" / "htmx-demo.png"
HTMX = "htmx.org/dist/htmx.min.js"
SSE = "htmx-ext-sse/dist/sse.js"
TURBO = "@hotwired/turbo/dist/turbo.es2017-esm.js"


@pytest.fixture
def viewport_height() -> int:
    return 640  # the screenshot's height


@pytest.fixture(scope="session")
def libs() -> Path:
    try:
        return install()
    except NpmMissing as exc:
        pytest.skip(str(exc))


@pytest.fixture
def fragments(settings) -> None:
    """The tests' fragment templates, for send_html in this process."""
    settings.TEMPLATES = [{**settings.TEMPLATES[0], "DIRS": [*settings.TEMPLATES[0]["DIRS"], TEMPLATES]}]


@pytest.fixture
def site(server_env) -> Iterator[Daphne]:
    """A daphne that lets the other origin (APP) read its streams: with credentials,
    as htmx's SSE extension always asks for them."""
    server = Daphne({**server_env, "EVENTS_CREDENTIALED_ORIGINS": APP}).start()
    yield server
    server.stop()


@contextlib.contextmanager
def broadcasting(name: str, template: str, event: str | None = None) -> Iterator[None]:
    """Orders saved in this process are sent to `name` as `template`, until the block ends."""
    broadcast_on_save(Order, channel=name, event=event, template=template)
    uid = f"events.broadcast_on_save:demo.order:{name!r}:{event}:{template}"
    try:
        yield
    finally:
        post_save.disconnect(sender=Order, dispatch_uid=uid + ":save")
        post_delete.disconnect(sender=Order, dispatch_uid=uid + ":delete")


async def serve_page(context, origin: str, body: str, libs: Path, name: str = "page") -> str:
    """Answer GET {origin}/app/{name}.html with `body`, and {origin}/app/lib/* from node_modules."""

    async def handle(route) -> None:
        path = route.request.url.split("/app/", 1)[1].split("?")[0]
        if path == f"{name}.html":
            await route.fulfill(body=body, content_type="text/html; charset=utf-8")
            return
        if not path.startswith("lib/"):
            await route.fallback()  # another page's route
            return
        file = (libs / path.removeprefix("lib/")).resolve()
        if libs.resolve() not in file.parents or not file.is_file():
            await route.fulfill(status=404, body="not found")
            return
        kind = mimetypes.guess_type(file.name)[0] or "application/octet-stream"
        await route.fulfill(body=file.read_bytes(), content_type=kind)

    await context.route(f"{origin}/app/**", handle)
    return f"{origin}/app/{name}.html"


def htmx_page(stream_url: str, *, resume: str = "") -> str:
    """Orders appended on order.created; the latest change in #changes on order.updated."""
    helper = f'<script src="{resume}"></script>' if resume else ""
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>htmx</title>
<script src="lib/{HTMX}"></script>
<script src="lib/{SSE}"></script>
{helper}
<script>
  window.opened = 0;
  document.addEventListener("htmx:sseOpen", () => window.opened++);
</script>
</head><body>
<div hx-ext="sse" sse-connect="{stream_url}">
  <ul id="orders" sse-swap="order.created,row" hx-swap="beforeend"></ul>
  <p id="changes" sse-swap="order.updated">none yet</p>
</div>
</body></html>"""


def turbo_page(stream_url: str) -> str:
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>Turbo</title>
<script type="module" src="lib/{TURBO}"></script>
</head><body>
<turbo-stream-source src="{stream_url}"></turbo-stream-source>
<ul id="orders"></ul>
</body></html>"""


async def texts(page, selector: str) -> list[str]:
    return await page.eval_on_selector_all(selector, "nodes => nodes.map(n => n.textContent.trim())")


async def wait_for_texts(page, selector: str, count: int, timeout: float = 20.0) -> list[str]:
    await page.wait_for_function(
        f"document.querySelectorAll({selector!r}).length >= {count}", timeout=timeout * 1000
    )
    return await texts(page, selector)


async def new_order(customer: str, **fields) -> Order:
    return await sync_to_async(Order.objects.create)(customer=customer, **fields)


async def set_status(order: Order, status: str) -> None:
    order.status = status
    await sync_to_async(order.save)()


class Sent(NamedTuple):
    """One request the browser made: its Last-Event-ID header as Chromium sent it, and
    whether it was refused (no server listened: it never left the browser, so no
    headers were sent and none can be shown)."""

    last_event_id: str | None
    refused: bool


async def sent_requests(context, page, path: str):
    """A function giving each request to `path` so far, in the order they were made, from
    the DevTools protocol (Playwright's own Request objects do not show Last-Event-ID)."""
    urls: dict[str, str] = {}  # in the order the requests were made
    headers: dict[str, dict[str, str]] = {}  # may be reported before or after the request
    refused: set[str] = set()
    cdp = await context.new_cdp_session(page)
    cdp.on("Network.requestWillBeSent", lambda p: urls.setdefault(p["requestId"], p["request"]["url"]))
    cdp.on(
        "Network.requestWillBeSentExtraInfo",
        lambda p: headers.setdefault(p["requestId"], {k.lower(): v for k, v in p["headers"].items()}),
    )
    # Only this failure: any other request, answered or cut, must show its headers.
    cdp.on(
        "Network.loadingFailed",
        lambda p: refused.add(p["requestId"]) if p["errorText"] == "net::ERR_CONNECTION_REFUSED" else None,
    )
    await cdp.send("Network.enable")

    def sent() -> list[Sent]:
        mine = [key for key, url in urls.items() if url.split("?")[0].endswith(path)]
        return [Sent(headers.get(key, {}).get("last-event-id"), key in refused) for key in mine]

    return sent


async def test_htmx_swaps_fragments_and_resumes_after_a_restart(context, server_env, libs, fragments) -> None:
    """sse-swap on two event types, fragments from send_html on model saves, in order;
    after a daphne restart the extension's EventSource reconnects by itself, with
    Last-Event-ID, and what was saved meanwhile appears once."""
    server = await asyncio.to_thread(Daphne({**server_env, **QUICK_RETURN}, port=free_port()).start)
    name = channel()
    try:
        with broadcasting(name, "e2e/order.html"):
            page = await context.new_page()
            sent = await sent_requests(context, page, f"/events/{name}/")
            await page.goto(
                await serve_page(
                    context, server.url, htmx_page(f"/events/{name}/?last_event_id={name}:0"), libs
                )
            )
            await page.wait_for_function("window.opened === 1")

            ada = await new_order("<Ada> & co")
            bob = await new_order("Bob")
            await set_status(ada, "paid")
            assert await wait_for_texts(page, "#orders li", 2) == ["<Ada> & co: new", "Bob: new"]
            await page.wait_for_selector(f"#changes #change-{ada.pk}")
            assert await page.inner_text("#changes") == f"#{ada.pk} is now paid"
            # Escaped by the template: text, not elements.
            assert await page.locator("#orders ada").count() == 0

            await asyncio.to_thread(server.stop)
            cy = await new_order("Cy")  # stored while no server runs
            await set_status(bob, "shipped")
            await asyncio.to_thread(server.start)

            # The retry the server sent at shutdown, then the replay.
            assert await wait_for_texts(page, "#orders li", 3, timeout=45) == [
                "<Ada> & co: new",
                "Bob: new",
                "Cy: new",
            ]
            await page.wait_for_selector(f"#changes #change-{bob.pk}")
            await new_order("Dee")
            assert (await wait_for_texts(page, "#orders li", 4))[3] == "Dee: new"
    finally:
        await asyncio.to_thread(server.stop)
    assert await texts(page, "#orders li") == ["<Ada> & co: new", "Bob: new", "Cy: new", "Dee: new"]
    assert cy.pk
    # One EventSource throughout: its own reconnect carried the id of the last event.
    assert await page.evaluate("window.opened") == 2
    requests = sent()
    assert [r.last_event_id for r in requests if not r.refused] == [None, f"{name}:3"]
    # Its retries may come before the new daphne listens (the retry the server sent at
    # shutdown against how long the restart takes): those are refused, and only between
    # the first request and the resume.
    assert [r.refused for r in requests] == [False, *[True] * (len(requests) - 2), False]


async def test_turbo_stream_source_appends_orders(context, daphne: Daphne, libs, fragments) -> None:
    name = channel()
    with broadcasting(name, "e2e/order_stream.html", event="message"):
        page = await context.new_page()
        await page.goto(
            await serve_page(context, daphne.url, turbo_page(f"/events/{name}/?last_event_id={name}:0"), libs)
        )
        await wait_for_count(name, 1)
        for customer in ("Ada", "Bob", "<Cy>"):
            await new_order(customer)
        assert await wait_for_texts(page, "#orders li", 3) == ["Ada", "Bob", "<Cy>"]
        # Turbo applied the <turbo-stream> elements: none is left in the page.
        assert await page.locator("turbo-stream").count() == 0


async def test_htmx_and_turbo_from_another_origin_with_a_token(
    context, site: Daphne, libs, fragments
) -> None:
    """The multi-channel stream without the slash (/events?channel=...), cross-origin,
    with a subscribe token: a redirect would have had no CORS headers."""
    htmx_channel, turbo_channel = channel(), channel()
    token = make_token([htmx_channel, turbo_channel], ttl=300)
    htmx_url = f"{site.url}/events?channel={htmx_channel}&token={token}&last_event_id={htmx_channel}:0"
    turbo_url = f"{site.url}/events?channel={turbo_channel}&token={token}&last_event_id={turbo_channel}:0"

    app = AppServer({"htmx.html": htmx_page(htmx_url), "turbo.html": turbo_page(turbo_url)}, libs)
    try:
        htmx = await context.new_page()
        await htmx.goto(f"{APP}/htmx.html")
        await htmx.wait_for_function("window.opened === 1")
        turbo = await context.new_page()
        await turbo.goto(f"{APP}/turbo.html")
        await wait_for_count(turbo_channel, 1)

        with (
            broadcasting(htmx_channel, "e2e/order.html"),
            broadcasting(turbo_channel, "e2e/order_stream.html", event="message"),
        ):
            await new_order("Ada")
            await new_order("Bob")
        assert await wait_for_texts(htmx, "#orders li", 2) == ["Ada: new", "Bob: new"]
        assert await wait_for_texts(turbo, "#orders li", 2) == ["Ada", "Bob"]
        assert await htmx.evaluate("location.origin") == APP
    finally:
        app.close()


class AppServer:
    """The other origin's site: `pages` by name, and lib/* from node_modules."""

    def __init__(self, pages: dict[str, str], libs: Path) -> None:
        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 (the stdlib's name)
                path = self.path.split("?")[0].lstrip("/")
                file = (libs / path.removeprefix("lib/")).resolve()
                if path in pages:
                    self.answer(200, pages[path].encode(), "text/html; charset=utf-8")
                elif path.startswith("lib/") and libs.resolve() in file.parents and file.is_file():
                    kind = mimetypes.guess_type(file.name)[0] or "application/octet-stream"
                    self.answer(200, file.read_bytes(), kind)
                else:
                    self.answer(404, b"not found", "text/plain")

            def answer(self, status: int, body: bytes, kind: str) -> None:
                self.send_response(status)
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", APP_PORT), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class Refusing:
    """What a proxy answers while the application behind it restarts: 502, on the
    application's own port. Records the paths it refused."""

    def __init__(self, port: int) -> None:
        paths = self.paths = []

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 (the stdlib's name)
                paths.append(self.path)
                body = b'{"error": "bad gateway"}'
                self.send_response(502)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.send_header("Connection", "close")
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.mark.parametrize("helper", [True, False], ids=["with-htmx-resume", "without"])
async def test_htmx_resumes_after_a_refused_reconnect(context, server_env, libs, fragments, helper) -> None:
    """A 502 while daphne restarts: EventSource gives up, and the extension opens a new
    one. Without events/htmx-resume.js that one starts from "now" and what was sent
    meanwhile is lost (htmx-ext-sse 2.2.4); with it, it starts from the last id seen."""
    server = await asyncio.to_thread(Daphne({**server_env, **QUICK_RETURN}, port=free_port()).start)
    name = channel()
    refusing: Refusing | None = None
    try:
        page = await context.new_page()
        resume = f"{server.url}/static/events/htmx-resume.js" if helper else ""
        await page.goto(
            await serve_page(context, server.url, htmx_page(f"/events/{name}/", resume=resume), libs)
        )
        await page.wait_for_function("window.opened === 1")
        # No position in the URL (as the issue measured it): the stream starts live once
        # it has joined its channel, a moment after it opened, so send until one shows.
        seen = await send_until_shown(page, name, first=1)

        await asyncio.to_thread(server.stop)
        refusing = Refusing(server.port)
        missed = [seen + 1, seen + 2]
        for n in missed:
            await asend_html(name, "e2e/row.html", {"n": n}, event="row")
        # The browser's own reconnect is refused, then (at least) one of the extension's.
        for _ in range(300):
            if len(refusing.paths) >= 2:
                break
            await asyncio.sleep(0.05)
        assert len(refusing.paths) >= 2, refusing.paths
        refusing.close()
        refusing_paths, refusing = refusing.paths, None
        await asyncio.to_thread(server.start)

        await page.wait_for_function("window.opened === 2", timeout=30_000)
        shown = await send_until_shown(page, name, first=seen + 3)
        rows = [int(text) for text in await texts(page, "#orders li")]
    finally:
        if refusing is not None:
            refusing.close()
        await asyncio.to_thread(server.stop)
    # The browser's own reconnect sends the id as a header; the extension's new
    # EventSources carry it in the URL only with the helper.
    resumed_from = [parse_qs(urlsplit(path).query).get("last_event_id") for path in refusing_paths]
    if helper:
        assert resumed_from[1:] == [[f"{name}:{seen}"]] * (len(resumed_from) - 1)
        assert (shown, rows) == (seen + 3, [seen, *missed, seen + 3])  # each once, in order
    else:
        assert resumed_from[1:] == [None] * (len(resumed_from) - 1)
        assert rows == [seen, shown]  # what the issue measured: the missed ones never arrive


async def send_until_shown(page, name: str, first: int) -> int:
    """Send rows first, first + 1, ... until one appears on the page; returns it."""
    for n in range(first, first + 10):
        await asend_html(name, "e2e/row.html", {"n": n}, event="row")
        try:
            await page.wait_for_function(
                f"[...document.querySelectorAll('#orders li')].some(li => li.textContent.trim() === '{n}')",
                timeout=2_000,
            )
            return n
        except async_api.TimeoutError:
            continue
    raise AssertionError(f"none of rows {first} to {first + 9} appeared")


async def test_demo_page_is_live_with_htmx(context, daphne: Daphne) -> None:
    """/demo/: the product's own page, htmx from the demo's static files. A new order is
    appended, a changed one replaced in place; the feed shows the same events as text.
    Saves docs/htmx-demo.png (when missing or UPDATE_SCREENSHOTS=1, else var/)."""
    # Orders like the demo's samples (its migration adds them; other tests flush them).
    await sync_to_async(Order.objects.all().delete)()
    for customer, status, total in [("Ada Lovelace", "paid", 42), ("Grace Hopper", "new", 17.5)]:
        await new_order(customer, status=status, total=total)
    grace = await sync_to_async(Order.objects.get)(customer="Grace Hopper")
    page = await context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    await page.goto(f"{daphne.url}/demo/")
    await page.wait_for_selector("#state[data-state=live]")
    before = await texts(page, "#orders tr")
    assert len(before) == 2

    order = await new_order("Edsger Dijkstra", total=Decimal("12.00"))
    await page.wait_for_selector(f"#order-{order.pk}")
    await set_status(grace, "shipped")
    await page.wait_for_selector(f"#order-{grace.pk} .status-shipped")
    rows = await texts(page, "#orders tr")
    assert len(rows) == len(before) + 1
    assert "Edsger Dijkstra" in rows[-1] and "New" in rows[-1]
    assert await page.locator(f"#order-{grace.pk}").count() == 1  # replaced, not added
    assert errors == []

    await page.mouse.move(0, 0)
    wanted = os.environ.get("UPDATE_SCREENSHOTS") == "1" or not SCREENSHOT.exists()
    path = SCREENSHOT if wanted else ROOT / "var" / "htmx-demo.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    await page.screenshot(path=str(path))

    # The feed (an inspector) shows those events as text, never as HTML.
    feed = await context.new_page()
    await feed.goto(f"{daphne.url}/feed/?channel=orders-html")
    await feed.wait_for_selector("#state[data-state=live]")
    await set_status(order, "paid")
    item = feed.locator('li.event[data-format="text"]').first
    await item.wait_for()
    assert "<tr id=" in await item.locator("pre.payload").text_content()
    assert await feed.locator("li.event tr, li.event td").count() == 0


def test_the_demo_serves_the_locked_htmx(libs) -> None:
    """demo/static/demo holds copies (so `make run` needs no npm); they are the files of
    the versions the lock pins (`make demo-htmx` copies them again)."""
    demo = ROOT / "demo" / "static" / "demo"
    assert (demo / "htmx.min.js").read_bytes() == (libs / "htmx.org/dist/htmx.min.js").read_bytes()
    assert (demo / "htmx-ext-sse.min.js").read_bytes() == (libs / "htmx-ext-sse/dist/sse.min.js").read_bytes()


async def test_feed_empty_state_links_the_demo(context, server_env) -> None:
    # The empty feed's suggestions are for whoever runs the site: shown under DEBUG.
    daphne = Daphne({**server_env, "DEBUG": "1"}).start()
    try:
        page = await context.new_page()
        await page.goto(f"{daphne.url}/feed/?channel={channel()}")
        await page.click("#empty a:text('demo orders, live with htmx')")
        await page.wait_for_selector("#state[data-state=live]")
        assert page.url == f"{daphne.url}/demo/"
    finally:
        daphne.stop()
