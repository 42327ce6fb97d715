"""ASGI entry point: daphne serves `site_config.asgi:application`."""

from __future__ import annotations

import os

from django.core.asgi import get_asgi_application
from django.core.exceptions import ImproperlyConfigured

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "site_config.settings")

# Set up Django (apps, settings) before importing anything that touches models.
try:
    django_asgi_app = get_asgi_application()
except ImproperlyConfigured as exc:
    # A missing SECRET_KEY, a bad value in the environment: the server does not start,
    # and says why in one line rather than a traceback.
    raise SystemExit(f"error: {exc}") from None

from routing import build_application  # noqa: E402

application = build_application(django_asgi_app)
