"""A steady publisher process: python -m tests.e2e.ticker COUNT INTERVAL CHANNEL...

Sends COUNT events, one every INTERVAL seconds, round-robin over the channels, each
carrying its number and the wall-clock time it was sent (to measure delivery lag).
"""

from __future__ import annotations

import os
import sys
import time


def main() -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "site_config.settings")
    import django

    django.setup()
    from events import send_event

    count, interval, channels = int(sys.argv[1]), float(sys.argv[2]), sys.argv[3:]
    start = time.monotonic()
    for n in range(count):
        # On a schedule, not after a sleep per event: a slow send (Redis down) does not
        # stretch the run.
        time.sleep(max(0.0, start + n * interval - time.monotonic()))
        send_event(channels[n % len(channels)], {"n": n, "t": time.time()}, event="tick")


if __name__ == "__main__":
    main()
