"""django-eventstream 5.3 configured as its README recommends for several processes.

- `daphne` and `django_eventstream` in INSTALLED_APPS, ASGI_APPLICATION, and the
  `events/<channel>/` route ("client selects a single channel using a path component").
- `EVENTSTREAM_REDIS`: its README's answer to "send events from management commands"
  and "multiple instances" (send_event publishes to Redis; one listener per process).
  The 5.3 README names no channel layer: channels-redis plays no part in this version.
- `EVENTSTREAM_STORAGE_CLASS = DjangoModelStorage`: its README's set-up "for reliable
  delivery" (events stored, streams repaired from the database), the guarantee our
  product gives too.
The rest is what `django-admin startproject` writes.
"""

from __future__ import annotations

import os
from pathlib import Path
from urllib.parse import urlparse

VAR_DIR = Path(os.environ["VAR_DIR"])
_redis = urlparse(os.environ["REDIS_URL"])

SECRET_KEY = "bench-only-not-secret"
DEBUG = False
ALLOWED_HOSTS = ["127.0.0.1", "localhost"]

INSTALLED_APPS = [
    "daphne",
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django_eventstream",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "bench.peer_site.urls"
ASGI_APPLICATION = "bench.peer_site.asgi.application"
TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ]
        },
    }
]

DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": str(VAR_DIR / "eventstream.sqlite3"),
        # The same SQLite settings as our product's, so neither waits differently.
        "OPTIONS": {
            "timeout": 20,
            "transaction_mode": "IMMEDIATE",
            "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL",
        },
    }
}
# The publishing section (bench/publishing.py) runs the peer on PostgreSQL too.
_pg = urlparse(os.environ.get("PEER_DATABASE_URL", ""))
if _pg.scheme.startswith("postgres"):
    DATABASES["default"] = {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": _pg.path.lstrip("/"),
        "USER": _pg.username or "",
        "PASSWORD": _pg.password or "",
        "HOST": _pg.hostname or "",
        "PORT": _pg.port or "",
    }
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
USE_TZ = True
STATIC_URL = "static/"

EVENTSTREAM_REDIS = {
    "host": _redis.hostname,
    "port": _redis.port or 6379,
    "db": int(_redis.path.strip("/") or 0),
}
# Without the setting (not None: it must be absent), its send_event stores nothing and
# only publishes to Redis: the publishing section's "no storage" case.
if not os.environ.get("PEER_NO_STORAGE"):
    EVENTSTREAM_STORAGE_CLASS = "django_eventstream.storage.DjangoModelStorage"
