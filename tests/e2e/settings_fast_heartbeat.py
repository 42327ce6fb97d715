"""The site's settings with a one-second heartbeat, for daphne processes whose idle
streams a test watches (a heartbeat is otherwise 15 s apart)."""

from __future__ import annotations

from site_config.settings import *  # noqa: F403

EVENTS_HEARTBEAT_SECONDS = 1.0
