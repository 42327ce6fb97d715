from __future__ import annotations

from django.contrib import admin
from django.urls import include, path

admin.site.site_header = "Live events"
admin.site.site_title = "Live events admin"
# The admin's "View site" link opens the live feed.
admin.site.site_url = "/feed/"

urlpatterns = [
    path("admin/", admin.site.urls),
    path("", include("events.urls")),
    path("demo/", include("demo.urls")),
]

handler400 = "events.views.json_bad_request"
handler403 = "events.views.json_permission_denied"
handler404 = "events.views.json_page_not_found"
handler500 = "events.views.json_server_error"
