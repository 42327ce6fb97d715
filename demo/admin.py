"""The demo Order admin: select orders, run "Broadcast the status…", watch /feed/?channel=orders."""

from __future__ import annotations

from django.contrib import admin
from django.urls import reverse

from demo.models import Order
from events.admin import broadcast_action


@admin.register(Order)
class OrderAdmin(admin.ModelAdmin):
    list_display = ["id", "customer", "status", "total"]
    # Editing a status in the list and saving also sends `order.updated` (demo/apps.py).
    list_editable = ["status"]
    list_filter = ["status"]
    search_fields = ["customer"]
    actions = [
        broadcast_action(
            "orders",
            event="order-status",
            serialize=lambda order: {"id": order.pk, "customer": order.customer, "status": order.status},
            description="Broadcast the status of the selected orders",
        )
    ]

    def view_on_site(self, obj: Order) -> str:
        # "View on site": the live feed of the channel these orders are broadcast to.
        return f"{reverse('events:feed')}?channel=orders"
