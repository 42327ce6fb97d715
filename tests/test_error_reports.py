"""The DEBUG error page shows no password carried in a URL (REDIS_URL, the layer's hosts)."""

from __future__ import annotations

import sys

from django.test import RequestFactory
from django.views.debug import ExceptionReporter

from site_config.error_reports import mask_url_passwords

SECRET = "hunter2-s3cret"


def error_page(settings) -> str:
    url = f"redis://:{SECRET}@redis.internal:6379/0"
    settings.DEBUG = True
    settings.REDIS_URL = url
    settings.CHANNEL_LAYERS = {"default": {"BACKEND": "x", "CONFIG": {"hosts": [url]}}}
    settings.BACKUP_URL = f"postgres://events:{SECRET}@db.internal/events"

    def connect(address: str) -> None:
        raise ConnectionError("cannot connect")

    try:
        connect(f"rediss://default:{SECRET}@cache.internal:6380")
    except ConnectionError:
        exc_info = sys.exc_info()
    request = RequestFactory().get("/healthz")
    return ExceptionReporter(request, *exc_info).get_traceback_html()


def test_debug_page_masks_passwords_in_urls(settings) -> None:
    html = error_page(settings)
    assert SECRET not in html
    assert "redis.internal:6379" in html  # the rest of the URL is still there to debug with
    assert "cache.internal:6380" in html


def test_mask_keeps_urls_without_passwords() -> None:
    assert mask_url_passwords("redis://redis.internal:6379/0") == "redis://redis.internal:6379/0"
    assert mask_url_passwords("unix:///var/run/redis.sock") == "unix:///var/run/redis.sock"
    assert (
        mask_url_passwords("see https://u:p@h/x and http://h:80")
        == "see https://u:********************@h/x and http://h:80"
    )
