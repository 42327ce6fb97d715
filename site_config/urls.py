from __future__ import annotations

from django.contrib import admin
from django.urls import include, path, re_path

from events import views

admin.site.site_header = "Live events"
admin.site.site_title = "Live events admin"
# The admin's "View site" link opens the live feed.
admin.site.site_url = "/feed/"

urlpatterns = [
    path("admin/", admin.site.urls),
    path("healthz", views.healthz, name="healthz"),
    path("feed/", views.feed, name="feed"),
    path("feed/types/", views.feed_types, name="feed-types"),
    path("presence/", views.presence_counts, name="presence"),
    # GET on these paths never reaches Django: routing.py sends it to the SSE consumer.
    # Anything between the slashes is taken as the channel, so that a bad name (even
    # one with a slash) is a 400 with a reason rather than a 404 page. The trailing
    # slash is optional for POST: APPEND_SLASH cannot redirect a POST (it keeps no body).
    re_path(r"^events/(?P<channel>.+?)/?$", views.publish, name="events-publish"),
    re_path(r"^events/$", views.publish),
    path("demo/", include("demo.urls")),
]

handler400 = "events.views.json_bad_request"
handler403 = "events.views.json_permission_denied"
handler404 = "events.views.json_page_not_found"
handler500 = "events.views.json_server_error"
