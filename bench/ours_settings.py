"""Our product's settings for the benchmark: the project's own, plus what a load test
from one machine needs.

Every stream of the benchmark comes from 127.0.0.1, so the per-client limits
(EVENTS_MAX_STREAMS_PER_CLIENT, and EVENTS_MAX_PENDING_SETUPS_PER_CLIENT for the ramp's
concurrent opens) are switched off explicitly here: the benchmark measures the server,
not those limits.
"""

from __future__ import annotations

from site_config.settings import *  # noqa: F403

EVENTS_MAX_STREAMS_PER_CLIENT = 0
EVENTS_MAX_PENDING_SETUPS_PER_CLIENT = 0
