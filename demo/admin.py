from __future__ import annotations

from django.contrib import admin

from demo.models import Order
from events.admin import broadcast_action


@admin.register(Order)
class OrderAdmin(admin.ModelAdmin):
    list_display = ["id", "customer", "status", "total"]
    list_filter = ["status"]
    actions = [
        broadcast_action(
            "orders",
            event="order-status",
            serialize=lambda order: {"id": order.pk, "customer": order.customer, "status": order.status},
            description="Broadcast the status of the selected orders",
        )
    ]
