from __future__ import annotations

from django.apps import AppConfig


class DemoConfig(AppConfig):
    """A small example of using the events app: an Order model that broadcasts."""

    name = "demo"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from demo.models import Order
        from events.signals import broadcast_on_save

        broadcast_on_save(Order, channel="orders")
