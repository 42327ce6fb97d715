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
from django.db.models import Min

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


def first_seqs(channels: Iterable[str]) -> dict[str, int | None]:
    """The oldest stored seq of each channel (None when nothing is stored)."""
    names = list(channels)
    rows = Event.objects.filter(channel__in=names).order_by().values("channel").annotate(first=Min("seq"))
    found = {row["channel"]: row["first"] for row in rows}
    return {name: found.get(name) for name in names}


# Rows fetched from the cursor at a time while a page is filled (page_within).
PAGE_FETCH_ROWS = 16


def page_within(channel: str, after: int, upto: int, max_bytes: int, rows: int) -> tuple[list[Event], int]:
    """The events of a channel after `after` (up to `upto`), oldest first, whose data
    adds up to at most `max_bytes` in UTF-8 (always at least one event); and that total.

    Rows come from the cursor a few at a time and reading stops at the bound, so no
    more than the page (and one event past it) is ever loaded."""
    events: list[Event] = []
    total = 0
    query = Event.objects.filter(channel=channel, seq__gt=after, seq__lte=upto).order_by("seq")[:rows]
    for event in query.iterator(chunk_size=PAGE_FETCH_ROWS):
        size = len(event.data.encode())
        if events and total + size > max_bytes:
            break
        events.append(event)
        total += size
    return events, total


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
