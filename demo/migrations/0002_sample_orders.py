"""A few sample orders, so that the admin action can be tried on a fresh database."""

from __future__ import annotations

from decimal import Decimal

from django.db import migrations

SAMPLES = [
    ("Ada Lovelace", "paid", "42.00"),
    ("Grace Hopper", "new", "17.50"),
    ("Alan Turing", "shipped", "8.25"),
]


def add_samples(apps, schema_editor):
    # The historical model sends no signals: creating the samples broadcasts nothing.
    Order = apps.get_model("demo", "Order")
    if not Order.objects.using(schema_editor.connection.alias).exists():
        Order.objects.using(schema_editor.connection.alias).bulk_create(
            [
                Order(customer=customer, status=status, total=Decimal(total))
                for customer, status, total in SAMPLES
            ]
        )


class Migration(migrations.Migration):
    dependencies = [("demo", "0001_initial")]

    operations = [migrations.RunPython(add_samples, migrations.RunPython.noop)]
