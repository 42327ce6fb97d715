"""A bounded fuzz run against a live daphne: whatever arrives, never a 5xx (README "HTTP interface"
and "Limits": a bad request is a 4xx)."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import os
import random

import httpx
import pytest

from tests.servers import Daphne

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

REQUESTS = 400
PUBLISHES = 60
CONCURRENCY = 20
SEED = int(os.environ.get("FUZZ_SEED", "20261124"))
# The e2e servers' publish token (tests/conftest.py server_env).
PUBLISH_AUTH = b"Bearer e2e-publish-token"

NASTY = [
    b"\x00",
    b"\xff\xfe",
    b"\r",
    b"\n",
    b"%00",
    b"%0d%0a",
    b"%ff",
    "é".encode(),
    "😀".encode(),
    b"'",
    b'"',
    b"<script>",
    b"../",
    b"%2f",
    b"\\",
    b":",
    b",",
    b" ",
    b"\t",
]


def rand_bytes(rng: random.Random, limit: int = 40) -> bytes:
    choice = rng.random()
    if choice < 0.3:
        return bytes(rng.randrange(256) for _ in range(rng.randrange(limit)))
    if choice < 0.6:
        return b"".join(rng.choice(NASTY) for _ in range(rng.randrange(1, 6)))
    return "".join(rng.choice("abcXYZ019._-") for _ in range(rng.randrange(1, 100))).encode()


def rand_path(rng: random.Random) -> bytes:
    return rng.choice(
        [
            b"/events/",
            b"/events/" + rand_bytes(rng) + b"/",
            b"/events/public/",
            b"/events/public",
            b"/events/user-1/",
            b"/events/private-ops/",
            b"/events/?channel=user-1&channel=private-x&channel=public",
            b"/feed/?channel=user-1",
            b"/feed/types/?channel=private-ops",
            b"/events//",
            b"/events/a/b/",
            b"/feed/",
            b"/feed/?channel=" + rand_bytes(rng),
            b"/healthz",
            b"/presence/",
            b"/admin/",
            b"/" + rand_bytes(rng),
            b"/events/" + b"x" * rng.choice([81, 5000, 20000]) + b"/",
        ]
    )


def rand_query(rng: random.Random) -> bytes:
    parts = []
    for _ in range(rng.randrange(0, 4)):
        kind = rng.random()
        if kind < 0.3:
            parts.append(b"&".join(b"channel=c%d" % i for i in range(rng.choice([1, 11, 3000]))))
        elif kind < 0.5:
            parts.append(
                b"last_event_id="
                + rng.choice([b"x" * 100_000, rand_bytes(rng), b"public:99999999999999999999"])
            )
        elif kind < 0.7:
            parts.append(b"token=" + rand_bytes(rng, 300))
        else:
            parts.append(rand_bytes(rng) + b"=" + rand_bytes(rng))
    return b"&".join(parts)


def rand_headers(rng: random.Random) -> list[bytes]:
    headers = []
    if rng.random() < 0.4:
        headers.append(
            b"Last-Event-ID: "
            + rng.choice(
                [
                    b"public:1",
                    b"a" * 70_000,
                    rand_bytes(rng).replace(b"\r", b"").replace(b"\n", b""),
                    b"public:1,public:2",
                ]
            )
        )
    if rng.random() < 0.3:
        headers.append(
            b"Origin: " + rng.choice([b"https://evil.example", b"null", rand_bytes(rng).replace(b"\n", b"")])
        )
    if rng.random() < 0.4:
        # The real token in most of these, so that publish bodies are parsed too.
        headers.append(
            b"Authorization: "
            + rng.choice(
                [PUBLISH_AUTH, PUBLISH_AUTH, b"Bearer ", b"Bearer " + rand_bytes(rng), b"Basic x", b""]
            )
        )
    if rng.random() < 0.3:
        cookie = rng.choice(
            [
                rand_bytes(rng).replace(b"\n", b"").replace(b"\r", b""),
                # Django's cookie parser turns the quoted octal escape into a real NUL.
                b'"abcdefgh\\000ijkl"',
                b"a" * 32,
                b'"' + rand_bytes(rng).replace(b"\n", b"").replace(b"\r", b"") + b'"',
            ]
        )
        headers.append(b"Cookie: sessionid=" + cookie + b"; csrftoken=x")
    if rng.random() < 0.1:
        headers.append(rand_bytes(rng, 20).replace(b"\n", b"").replace(b":", b"") + b": " + rand_bytes(rng))
    return headers


def rand_body(rng: random.Random) -> bytes:
    return rng.choice(
        [
            b"",
            b"{",
            b"[" * 50_000,
            json.dumps({"data": "x" * 70_000}).encode(),
            b'{"event": "a b", "data": 1}',
            b'{"data": 1, "extra": 2}',
            b'{"data": NaN}',
            rand_bytes(rng, 500),
            b"\xff\xfe\x00",
            json.dumps({"event": "ok", "data": {"nested": [1, 2, {"\u0000": "\u2028"}]}}).encode(),
        ]
    )


def build_request(rng: random.Random) -> bytes:
    method = rng.choice(
        [b"GET", b"GET", b"GET", b"POST", b"POST", b"HEAD", b"OPTIONS", b"PUT", b"DELETE", b"BREW"]
    )
    target = rand_path(rng)
    query = rand_query(rng)
    if query and b"?" not in target:
        target += b"?" + query
    body = rand_body(rng) if method in (b"POST", b"PUT") else b""
    host = rng.choice([b"127.0.0.1", b"127.0.0.1", b"127.0.0.1", b"evil.example", b"", rand_bytes(rng, 20)])
    lines = [
        method + b" " + target + b" HTTP/1.1",
        b"Host: " + host.replace(b"\r", b"").replace(b"\n", b""),
        b"Connection: close",
        *rand_headers(rng),
    ]
    if body or method == b"POST":
        lines += [b"Content-Type: application/json", b"Content-Length: %d" % len(body)]
    return b"\r\n".join(lines) + b"\r\n\r\n" + body


def build_publish(rng: random.Random, body: bytes | None = None) -> bytes:
    """An authorised publish to a valid channel: whatever the body, it is parsed."""
    body = rand_body(rng) if body is None else body
    target = rng.choice([b"/events/fuzz/", b"/events/fuzz", b"/events/user-1/"])
    lines = [
        b"POST " + target + b" HTTP/1.1",
        b"Host: 127.0.0.1",
        b"Connection: close",
        b"Authorization: " + PUBLISH_AUTH,
        b"Content-Type: application/json",
        b"Content-Length: %d" % len(body),
    ]
    return b"\r\n".join(lines) + b"\r\n\r\n" + body


async def send_one(port: int, request: bytes) -> str:
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), 5)
    except (TimeoutError, OSError):
        return "connect-failed"
    try:
        writer.write(request)
        await writer.drain()
        try:
            line = await asyncio.wait_for(reader.readline(), 10)
        except TimeoutError:
            return "no-answer"
        if not line:
            # Twisted drops a connection whose request line or a header is over its
            # line limit (16 KiB) without answering: refused, not an error.
            return "closed"
        parts = line.split(b" ")
        return parts[1].decode() if len(parts) > 1 else "garbled"
    except (TimeoutError, OSError, asyncio.IncompleteReadError):
        return "closed"
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()


async def test_fuzz_live_daphne(daphne: Daphne) -> None:
    rng = random.Random(SEED)
    requests = [build_request(rng) for _ in range(REQUESTS)]
    requests += [build_publish(rng) for _ in range(PUBLISHES)]
    requests.append(build_publish(rng, b'{"event": "ok", "data": [1]}'))
    semaphore = asyncio.Semaphore(CONCURRENCY)

    async def limited(request: bytes) -> str:
        async with semaphore:
            return await send_one(daphne.port, request)

    results = await asyncio.wait_for(asyncio.gather(*(limited(r) for r in requests)), 240)
    counts = collections.Counter(results)
    print(f"fuzz (seed {SEED}): {len(requests)} requests: {dict(sorted(counts.items()))}")
    server_errors = {status: n for status, n in counts.items() if status.startswith("5")}
    assert not server_errors, (server_errors, daphne.output()[-3000:])
    assert counts["connect-failed"] == 0
    assert counts["no-answer"] == 0, "requests the server never answered"
    assert counts["201"] >= 1, "no publish body got past validation"
    assert daphne.process.poll() is None, "daphne died"
    async with httpx.AsyncClient() as client:
        assert (await client.get(f"{daphne.url}/healthz")).status_code == 200
    assert "Traceback" not in daphne.output(), daphne.output()[-5000:]
