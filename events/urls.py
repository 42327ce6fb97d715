"""The app's URLs: `path("", include("events.urls"))` in a project's urls.py.

Mounted at the root, because the streams' prefix is fixed: GET /events/... never
reaches these patterns (events.asgi.with_streams sends it to the SSE consumer), and the
publish endpoint shares its paths.
"""

from __future__ import annotations

from django.urls import path, re_path

from events import views

app_name = "events"

urlpatterns = [
    path("healthz", views.healthz, name="healthz"),
    path("feed/", views.feed, name="feed"),
    path("feed/types/", views.feed_types, name="feed-types"),
    path("presence/", views.presence_counts, name="presence"),
    path("metrics", views.metrics_endpoint, name="metrics"),
    # Anything between the slashes is taken as the channel, so that a bad name (even
    # one with a slash) is a 400 with a reason rather than a 404 page. The trailing
    # slash is optional for POST: APPEND_SLASH cannot redirect a POST (it keeps no body).
    re_path(r"^events/(?P<channel>.+?)/?$", views.publish, name="publish"),
    re_path(r"^events/$", views.publish),
]
