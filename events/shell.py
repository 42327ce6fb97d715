"""How to spell `python` in the hints the project prints (the serve banner, the feed page)."""

from __future__ import annotations

import os
import sys
from functools import cache

from django.conf import settings


@cache
def python_command() -> str:
    """This interpreter as a newcomer should type it: `.venv/bin/python` when it is the
    checkout's own virtualenv (a bare `python` may be another one, without Django)."""
    base = getattr(settings, "BASE_DIR", None)  # startproject's; not every project has one
    if base is None:
        return "python"
    try:
        relative = os.path.relpath(sys.executable, base)
    except ValueError:  # another drive (Windows)
        return "python"
    return relative if not relative.startswith("..") else "python"
