"""A thread pool made on first use and made again in a forked child.

A child process (gunicorn --preload, Celery prefork) inherits the parent's pool object
but none of its threads: work handed to it would wait forever. So the pool remembers the
process that made it and is replaced when another process asks for it.
"""

from __future__ import annotations

import os
import threading
from concurrent.futures import ThreadPoolExecutor


class ProcessExecutor:
    """`get()` returns this process's pool of `workers` threads named `name-N`."""

    def __init__(self, workers: int, name: str) -> None:
        self.workers = workers
        self.name = name
        self._lock = threading.Lock()
        self._executor: ThreadPoolExecutor | None = None
        self._pid = os.getpid()

    def get(self) -> ThreadPoolExecutor:
        with self._lock:
            if self._executor is None or self._pid != os.getpid():
                self._executor = ThreadPoolExecutor(max_workers=self.workers, thread_name_prefix=self.name)
                self._pid = os.getpid()
            return self._executor
