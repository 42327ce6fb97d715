"""How a stream ends at shutdown: with a `retry:` of EVENTS_RETRY_MS plus a random part
of EVENTS_SHUTDOWN_RETRY_SPREAD_MS, and the response's end."""

from __future__ import annotations

import pytest

from events import shutdown
from events.transport import ASGI_ONLY
from tests.streams import parse_frames


class Ended:
    def __init__(self) -> None:
        self.finals: list[bytes] = []
        self.reasons: list[str] = []

    async def close_stream(self, abort: bool = False, final: bytes = b"", reason: str = "error") -> None:
        self.finals.append(final)
        self.reasons.append(reason)


def retry_of(final: bytes) -> int:
    (frame,) = parse_frames(final)
    assert set(frame) == {"retry"}, final
    return int(frame["retry"])


async def end_many(count: int) -> list[int]:
    retries = []
    for _ in range(count):
        stream = Ended()
        await shutdown.end_stream(stream, ASGI_ONLY)
        assert stream.reasons == ["shutdown"]
        retries.append(retry_of(stream.finals[0]))
    return retries


@pytest.mark.parametrize(("retry_ms", "spread_ms"), [(3000, 10_000), (500, 200)])
async def test_retry_at_shutdown_is_spread_within_the_setting(settings, retry_ms, spread_ms) -> None:
    settings.EVENTS_RETRY_MS = retry_ms
    settings.EVENTS_SHUTDOWN_RETRY_SPREAD_MS = spread_ms
    retries = await end_many(200)
    assert all(retry_ms <= retry <= retry_ms + spread_ms for retry in retries), retries
    # Spread out, not one value for all.
    assert len(set(retries)) > 20


async def test_no_spread_tells_every_client_the_retry(settings) -> None:
    settings.EVENTS_RETRY_MS = 1234
    settings.EVENTS_SHUTDOWN_RETRY_SPREAD_MS = 0
    assert set(await end_many(20)) == {1234}
