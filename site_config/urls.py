from __future__ import annotations

from django.contrib import admin
from django.urls import include, path

from events import views

urlpatterns = [
    path("admin/", admin.site.urls),
    path("healthz", views.healthz, name="healthz"),
    path("feed/", views.feed, name="feed"),
    # GET on these paths never reaches Django: routing.py sends it to the SSE consumer.
    path("events/<str:channel>/", views.publish, name="events-publish"),
    path("demo/", include("demo.urls")),
]
