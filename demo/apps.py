from __future__ import annotations

from django.apps import AppConfig

# The demo page's channel (/demo/): each order's table row as HTML, for htmx.
HTML_CHANNEL = "orders-html"


class DemoConfig(AppConfig):
    """A small example of using the events app: an Order model that broadcasts."""

    name = "demo"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from demo.models import Order
        from events.signals import broadcast_on_save

        # JSON on "orders" (the feed page, scripts), and the row as HTML for /demo/. Both
        # channels are public: send only what every reader may see.
        broadcast_on_save(Order, channel="orders", fields=["status", "total"])
        broadcast_on_save(Order, channel=HTML_CHANNEL, template="demo/order_row.html")
