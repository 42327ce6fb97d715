"""CHANNEL_LAYERS for settings.py in one line: `CHANNEL_LAYERS = channel_layers(REDIS_URL)`.

Importable from settings (it imports nothing of Django): the layer the product is built
for, channels-redis' pub/sub layer, with no per-group capacity drops and no group
expiry; the per-channel sequence in events/hub.py covers what pub/sub can still lose.
"""

from __future__ import annotations

from typing import Any

PUBSUB_LAYER = "channels_redis.pubsub.RedisPubSubChannelLayer"


def channel_layers(redis_url: str, **config: Any) -> dict[str, Any]:
    """The CHANNEL_LAYERS setting for one Redis; `config` adds to the layer's CONFIG
    (`prefix=...` and the other options of channels-redis)."""
    return {"default": {"BACKEND": PUBSUB_LAYER, "CONFIG": {"hosts": [redis_url], **config}}}
