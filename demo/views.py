"""The demo's views: a sync view that publishes, and the orders page live with htmx."""

from __future__ import annotations

from django.contrib.admin.views.decorators import staff_member_required
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import get_object_or_404, render
from django.views.decorators.http import require_POST

from demo.apps import HTML_CHANNEL
from demo.models import Order
from events import send_event
from events.html import stream_position
from events.shell import python_command


@staff_member_required
@require_POST
def ship(request: HttpRequest, pk: int) -> JsonResponse:
    """A plain sync Django view that publishes: the most common way code emits events."""
    order = get_object_or_404(Order, pk=pk)
    order.status = Order.Status.SHIPPED
    order.save(update_fields=["status"])  # broadcast_on_save sends "order.updated"
    event = send_event("orders", {"id": order.pk, "status": order.status}, event="order-shipped")
    return JsonResponse({"id": event.sse_id})


def orders(request: HttpRequest) -> HttpResponse:
    """/demo/: the orders as a table that htmx keeps live from HTML events."""
    # The position first, then the rows: an order saved in between is sent again
    # (appended twice) rather than missed.
    position = stream_position([HTML_CHANNEL])
    context = {
        "orders": Order.objects.order_by("pk"),
        "channel": HTML_CHANNEL,
        "stream_url": f"/events/{HTML_CHANNEL}/?last_event_id={position}",
        "python": python_command(),
    }
    return render(request, "demo/orders.html", context)
