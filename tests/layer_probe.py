"""Watch what reaches the channel layer's group for an SSE channel, from sync tests.

A plain Redis pub/sub subscription on the group's Redis channel: it sees exactly what
every daphne process's hub would receive.
"""

from __future__ import annotations

import time
from typing import Any

import redis
from channels.layers import get_channel_layer
from django.conf import settings

from events import broadcaster
from events.messages import group_name


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
