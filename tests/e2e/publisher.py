"""A publisher process for the chaos test: python -m tests.e2e.publisher TAG COUNT CHANNEL..."""

from __future__ import annotations

import os
import random
import sys
import time


def main() -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "site_config.settings")
    import django

    django.setup()
    from events import send_event

    tag, count, channels = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
    rng = random.Random(tag)
    for n in range(count):
        send_event(rng.choice(channels), {"tag": tag, "n": n}, event="chaos")
        time.sleep(rng.uniform(0, 0.02))


if __name__ == "__main__":
    main()
