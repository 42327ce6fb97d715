"""A database session store that refuses malformed session keys before any query.

Django's cookie parser turns a quoted `\\000` in a cookie into a real NUL byte, and
PostgreSQL refuses NUL in text ("cannot contain NUL"): with the stock store, one crafted
`sessionid` cookie made every session-reading request (the admin, publishing, the
policy of `user-*` and `private-*` streams) answer 500 there. Django's own keys are 32
characters of [a-z0-9]; anything else can only be forged, and counts as no session.
"""

from __future__ import annotations

import re

from django.contrib.sessions.backends.db import SessionStore as DatabaseSessionStore

# Django makes keys of 32 [a-z0-9] characters; its minimum length is 8.
SESSION_KEY = re.compile(r"[a-z0-9]{8,40}")


class SessionStore(DatabaseSessionStore):
    def _validate_session_key(self, key: str | None) -> bool:
        return bool(key and SESSION_KEY.fullmatch(key))
