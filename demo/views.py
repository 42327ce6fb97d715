"""A plain sync Django view that publishes: the most common way code emits events."""

from __future__ import annotations

from django.contrib.admin.views.decorators import staff_member_required
from django.http import HttpRequest, JsonResponse
from django.shortcuts import get_object_or_404
from django.views.decorators.http import require_POST

from demo.models import Order
from events import send_event


@staff_member_required
@require_POST
def ship(request: HttpRequest, pk: int) -> JsonResponse:
    order = get_object_or_404(Order, pk=pk)
    order.status = Order.Status.SHIPPED
    order.save(update_fields=["status"])  # broadcast_on_save sends "order.updated"
    event = send_event("orders", {"id": order.pk, "status": order.status}, event="order-shipped")
    return JsonResponse({"id": event.sse_id})
