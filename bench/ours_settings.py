"""Our product's settings for the benchmark: the project's own, plus what a load test
from one machine needs.

Every stream of the benchmark comes from 127.0.0.1, so a per-client stream limit
(EVENTS_MAX_STREAMS_PER_CLIENT, 100 by default) is switched off explicitly here: the
benchmark measures the server, not that limit.
"""

from __future__ import annotations

from site_config.settings import *  # noqa: F403

EVENTS_MAX_STREAMS_PER_CLIENT = 0
