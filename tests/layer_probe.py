"""The channel layer from sync tests: watch what reaches the group of an SSE channel
(GroupListener), or point the layer at no Redis (layer_without_redis).

GroupListener is a plain Redis pub/sub subscription on the group's Redis channel: it sees
exactly what every daphne process's hub would receive.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import redis
from channels.layers import channel_layers, get_channel_layer
from django.conf import settings
from django.test import override_settings

from events import broadcaster
from events.messages import group_name
from tests.servers import free_port


@contextmanager
def layer_without_redis() -> Iterator[None]:
    """The channel layer pointed at a port where no Redis listens, then restored."""
    old = settings.CHANNEL_LAYERS["default"]
    dead = {**old, "CONFIG": {**old["CONFIG"], "hosts": [f"redis://127.0.0.1:{free_port()}/0"]}}
    # The layer object is cached per alias: drop it on the way in and out.
    channel_layers.backends.clear()
    try:
        with override_settings(CHANNEL_LAYERS={"default": dead}):
            yield
    finally:
        channel_layers.backends.clear()


class GroupListener:
    def __init__(self, channel: str) -> None:
        config = settings.CHANNEL_LAYERS["default"]["CONFIG"]
        self.redis_channel = f"{config['prefix']}__group__{group_name(channel)}"
        self.client = redis.Redis.from_url(config["hosts"][0])
        self.pubsub = self.client.pubsub(ignore_subscribe_messages=True)
        self.committed_at: list[float] = []

    def __enter__(self) -> GroupListener:
        # Events published before the listener opens go out before it listens: the
        # publisher thread sends them a moment after send_event returns.
        broadcaster.flush(10)
        self.pubsub.subscribe(self.redis_channel)
        # Wait for the subscription to be confirmed before anything is published.
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            if self.client.pubsub_numsub(self.redis_channel)[0][1] >= 1:
                break
            self.pubsub.get_message(timeout=0.05)
        return self

    def __exit__(self, *exc: object) -> None:
        self.pubsub.close()
        self.client.close()

    def messages(self, timeout: float = 1.0, count: int | None = None) -> list[dict[str, Any]]:
        """Messages received within `timeout` (or as soon as `count` have arrived)."""
        layer = get_channel_layer()
        assert layer is not None
        received: list[dict[str, Any]] = []
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and (count is None or len(received) < count):
            message = self.pubsub.get_message(timeout=max(0.0, min(0.1, deadline - time.monotonic())))
            if message and message["type"] == "message":
                received.append(layer.deserialize(message["data"]))
        # The broadcast time (for the delivery lag metric) differs on every run: kept
        # apart, so that tests compare the rest exactly.
        for message in received:
            self.committed_at.append(message.pop("committed_at"))
        return received
