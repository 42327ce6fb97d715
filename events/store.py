"""The event store: append with a per-channel sequence, read back after a position, trim.

Why the ids are safe to resume from (SPEC 4.3): an id is `channel:seq`, and `seq` comes
from an upsert on the channel's row in the same transaction that inserts the event. On
PostgreSQL the upsert takes that row's lock and keeps it until the transaction ends; on
SQLite the whole database is locked for writing. So a publisher of the same channel
cannot get seq N+1 before the transaction holding N has committed or rolled back: the
seqs of a channel become visible in order, with no holes (a rollback returns its seq).
A reader that has seen seq 12 can never later find an 11 appear, which is the trap of
ids taken from a shared sequence. Different channels never wait on each other.

The functions here are synchronous (Django ORM); async callers wrap them.
"""

from __future__ import annotations

from collections.abc import Iterable

from django.db import connection, transaction

from events.models import Channel, Event


def _bump_sql() -> str:
    table = connection.ops.quote_name(Channel._meta.db_table)
    name = connection.ops.quote_name("name")
    last = connection.ops.quote_name("last_seq")
    return (
        f"INSERT INTO {table} ({name}, {last}) VALUES (%s, 1) "
        f"ON CONFLICT ({name}) DO UPDATE SET {last} = {table}.{last} + 1 "
        f"RETURNING {last}"
    )


def append(channel: str, event_type: str, data: str, *, raw: bool = False) -> Event:
    """Store one event, assigning the next seq of its channel (`raw`: data is text, not JSON)."""
    with transaction.atomic():
        with connection.cursor() as cursor:
            cursor.execute(_bump_sql(), [channel])
            (seq,) = cursor.fetchone()
        return Event.objects.create(channel=channel, seq=seq, type=event_type, data=data, raw=raw)


def last_seqs(channels: Iterable[str]) -> dict[str, int]:
    """The last committed seq of each channel (0 for a channel never published to)."""
    names = list(channels)
    found = dict(Channel.objects.filter(name__in=names).values_list("name", "last_seq"))
    return {name: found.get(name, 0) for name in names}


def page(channel: str, after: int, upto: int, limit: int) -> list[Event]:
    """At most `limit` events of a channel with after < seq <= upto, oldest first."""
    if upto <= after:
        return []
    return list(Event.objects.filter(channel=channel, seq__gt=after, seq__lte=upto).order_by("seq")[:limit])


def trim(channel: str, keep: int) -> int:
    """Delete all but the newest `keep` events of a channel; returns how many went.

    It deletes by seq below a bound, never touching the channel row, so it does not
    wait on or block publishers of the channel.
    """
    last = Channel.objects.filter(name=channel).values_list("last_seq", flat=True).first()
    if not last or last <= keep:
        return 0
    deleted, _ = Event.objects.filter(channel=channel, seq__lte=last - keep).delete()
    return deleted
