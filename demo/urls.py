from __future__ import annotations

from django.urls import path

from demo import views

urlpatterns = [
    path("", views.orders, name="demo-orders"),
    path("orders/<int:pk>/ship/", views.ship, name="demo-ship"),
]
