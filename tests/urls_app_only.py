"""A project's urls.py with the events app and nothing else (no admin, no demo)."""

from __future__ import annotations

from django.urls import include, path

urlpatterns = [path("", include("events.urls"))]
