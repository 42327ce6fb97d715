"""The event store: append with a per-channel sequence, read back after a position, trim.

Why the ids are safe to resume from (README: Resume): an id is `channel:seq`, and `seq` comes
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

import functools
import json
import logging
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence

from django.db import DatabaseError, OperationalError, connection, transaction
from django.db.models import Min
from django.utils import timezone

from events.models import Channel, Event

logger = logging.getLogger(__name__)


@functools.lru_cache(maxsize=64)
def _bump_sql(channels: int, vendor: str) -> str:
    """The upsert that adds a count to each of `channels` channel rows (parameters: name,
    count, for each) and returns their (name, last_seq): the only place seqs come from.
    Built once per size and database vendor (the cache key), not per event."""
    table = connection.ops.quote_name(Channel._meta.db_table)
    name = connection.ops.quote_name("name")
    last = connection.ops.quote_name("last_seq")
    values = ", ".join(["(%s, %s)"] * channels)
    return (
        f"INSERT INTO {table} ({name}, {last}) VALUES {values} "
        f"ON CONFLICT ({name}) DO UPDATE SET {last} = {table}.{last} + excluded.{last} "
        f"RETURNING {name}, {last}"
    )


@functools.lru_cache(maxsize=8)
def _append_sql(vendor: str) -> str:
    """The one statement that stores an event on PostgreSQL: the upsert of its channel's
    row and the insert, the row lock held until the statement's transaction ends."""
    return f"WITH bumped AS ({_bump_sql(1, vendor)}) {_insert_sql('last_seq')} FROM bumped RETURNING id, seq"


def _insert_sql(seq: str) -> str:
    """INSERT of one event whose seq is the SQL expression `seq`."""
    ops = connection.ops
    table = ops.quote_name(Event._meta.db_table)
    columns = ", ".join(ops.quote_name(c) for c in ("channel", "seq", "type", "data", "raw", "created"))
    return f"INSERT INTO {table} ({columns}) SELECT %s, {seq}, %s, %s, %s, %s"


def append_one(item: tuple[str, str, str, bool]) -> Event:
    """append() for a (channel, type, data, raw) item."""
    channel, event_type, data, raw = item
    return append(channel, event_type, data, raw=raw)


def append(channel: str, event_type: str, data: str, *, raw: bool = False) -> Event:
    """Store one event, assigning the next seq of its channel (`raw`: data is text, not JSON)."""
    created = timezone.now()
    at = connection.ops.adapt_datetimefield_value(created)
    with connection.cursor() as cursor:
        if connection.features.can_return_columns_from_insert and connection.vendor == "postgresql":
            # One statement, so one round trip (and its own transaction in autocommit):
            # the upsert's row lock is held until the statement's transaction ends,
            # which stores the event too.
            cursor.execute(_append_sql(connection.vendor), [channel, 1, channel, event_type, data, raw, at])
            pk, seq = cursor.fetchone()
        else:
            # SQLite has no INSERT inside WITH: two statements in one transaction.
            with transaction.atomic():
                cursor.execute(_bump_sql(1, connection.vendor), [channel, 1])
                (_, seq) = cursor.fetchone()
                cursor.execute(_insert_sql("%s") + " RETURNING id", [channel, seq, event_type, data, raw, at])
                (pk,) = cursor.fetchone()
    return Event(id=pk, channel=channel, seq=seq, type=event_type, data=data, raw=raw, created=created)


def append_many(items: Sequence[tuple[str, str, str, bool]], keep: int | None = None) -> list[Event]:
    """Store (channel, type, data, raw) items in one transaction; each channel's seqs are
    handed out in the items' order, one upsert for the lot. With `keep`, the channels
    these events make due for a trim (due_trims) are trimmed in the same transaction.

    The channel rows are locked in name order. A transaction of the caller's that locked
    them in another order can still deadlock with it on PostgreSQL; when this is its own
    transaction (not inside the caller's atomic block), the one the database picked to
    fail is retried: nothing of it was stored.
    """
    for attempt in range(DEADLOCK_RETRIES + 1):
        try:
            return _append_many(items, keep)
        except OperationalError as exc:
            own = not connection.in_atomic_block
            if not (own and attempt < DEADLOCK_RETRIES and _is_deadlock(exc)):
                raise
    raise AssertionError("unreachable")


DEADLOCK_RETRIES = 3


def _is_deadlock(exc: Exception) -> bool:
    # PostgreSQL's SQLSTATE for "deadlock detected", on the driver's error.
    return getattr(exc.__cause__, "sqlstate", None) == "40P01"


def _append_many(items: Sequence[tuple[str, str, str, bool]], keep: int | None) -> list[Event]:
    counts = Counter(item[0] for item in items)
    with transaction.atomic():
        last = _bump_many(counts)
        next_seq = {name: last[name] - count + 1 for name, count in counts.items()}
        seqs = []
        for item in items:
            seqs.append(next_seq[item[0]])
            next_seq[item[0]] += 1
        if connection.vendor == "postgresql":
            events = _insert_many_postgresql(items, seqs)
        elif connection.vendor == "sqlite" and connection.features.can_return_rows_from_bulk_insert:
            events = _insert_many_sqlite(items, seqs)
        else:
            events = Event.objects.bulk_create(
                [
                    Event(channel=channel, seq=seq, type=event_type, data=data, raw=raw)
                    for (channel, event_type, data, raw), seq in zip(items, seqs, strict=True)
                ]
            )
        if keep is not None:
            _trim_within(events, keep)
        return events


def _trim_within(events: list[Event], keep: int) -> None:
    """Trim the channels these events make due, in the current transaction; a trim that
    fails is logged and rolled back alone, never the events (the next one makes up)."""
    for channel, last in sorted(due_trims(events, keep).items()):
        try:
            with transaction.atomic():
                trim(channel, keep, last)
        except DatabaseError:
            logger.exception("trimming channel %r failed", channel)


def _insert_many_postgresql(items: Sequence[tuple[str, str, str, bool]], seqs: list[int]) -> list[Event]:
    """Insert the items with their seqs in one statement whose rows travel as one JSON
    parameter: quoting one string costs far less than Django's bulk_create quoting a
    value (or an array element) per field per row on the client."""
    created = timezone.now()
    rows = json.dumps(
        [
            {"c": channel, "s": seq, "t": event_type, "d": data, "x": raw}
            for (channel, event_type, data, raw), seq in zip(items, seqs, strict=True)
        ],
        ensure_ascii=False,
    )
    with connection.cursor() as cursor:
        cursor.execute(_insert_many_sql(), [connection.ops.adapt_datetimefield_value(created), rows])
        # Matched by (channel, seq), unique, so nothing rests on the order RETURNING uses.
        ids = {(channel, seq): pk for channel, seq, pk in cursor.fetchall()}
    # Positional arguments: the model's fast path, in the order of its fields.
    return [
        Event(ids[channel, seq], channel, seq, event_type, data, raw, created)
        for (channel, event_type, data, raw), seq in zip(items, seqs, strict=True)
    ]


@functools.lru_cache(maxsize=1)
def _insert_many_sql() -> str:
    ops = connection.ops
    table = ops.quote_name(Event._meta.db_table)
    columns = ", ".join(ops.quote_name(c) for c in ("channel", "seq", "type", "data", "raw", "created"))
    # WITH ORDINALITY and ORDER BY: ids are handed out in the items' order, as bulk_create does.
    return (
        f"INSERT INTO {table} ({columns}) "
        "SELECT r.c, r.s, r.t, r.d, r.x, %s "
        "FROM ROWS FROM (json_to_recordset(%s::json) AS (c text, s bigint, t text, d text, x boolean)) "
        "WITH ORDINALITY AS r(c, s, t, d, x, n) ORDER BY r.n "
        f"RETURNING {ops.quote_name('channel')}, {ops.quote_name('seq')}, {ops.quote_name('id')}"
    )


def _insert_many_sqlite(items: Sequence[tuple[str, str, str, bool]], seqs: list[int]) -> list[Event]:
    """Insert the items with their seqs in multi-row statements built here: bulk_create
    spends most of a list's time preparing each field of each row in Python."""
    created = timezone.now()
    at = connection.ops.adapt_datetimefield_value(created)
    rows = [
        (channel, seq, event_type, data, raw, at)
        for (channel, event_type, data, raw), seq in zip(items, seqs, strict=True)
    ]
    ids: dict[tuple[str, int], int] = {}
    with connection.cursor() as cursor:
        for start in range(0, len(rows), _SQLITE_ROWS):
            chunk = rows[start : start + _SQLITE_ROWS]
            cursor.execute(_insert_rows_sql(len(chunk)), [value for row in chunk for value in row])
            ids.update(((channel, seq), pk) for channel, seq, pk in cursor.fetchall())
    return [
        Event(ids[channel, seq], channel, seq, event_type, data, raw, created)
        for (channel, event_type, data, raw), seq in zip(items, seqs, strict=True)
    ]


# Rows per statement: six parameters each, under SQLite's 999 variables.
_SQLITE_ROWS = 166


@functools.lru_cache(maxsize=8)
def _insert_rows_sql(rows: int) -> str:
    ops = connection.ops
    table = ops.quote_name(Event._meta.db_table)
    columns = ", ".join(ops.quote_name(c) for c in ("channel", "seq", "type", "data", "raw", "created"))
    values = ", ".join(["(%s, %s, %s, %s, %s, %s)"] * rows)
    returning = ", ".join(ops.quote_name(c) for c in ("channel", "seq", "id"))
    # Matched by (channel, seq), unique, so nothing rests on the order RETURNING uses.
    return f"INSERT INTO {table} ({columns}) VALUES {values} RETURNING {returning}"


def _bump_many(counts: Mapping[str, int]) -> dict[str, int]:
    # Sorted: two batches lock the channel rows they share in the same order, so they
    # queue behind each other instead of deadlocking.
    names = sorted(counts)
    found: dict[str, int] = {}
    with connection.cursor() as cursor:
        for start in range(0, len(names), _BUMP_CHUNK):
            chunk = names[start : start + _BUMP_CHUNK]
            cursor.execute(
                _bump_sql(len(chunk), connection.vendor),
                [param for channel in chunk for param in (channel, counts[channel])],
            )
            found.update(cursor.fetchall())
    return found


# Channels per upsert statement: two parameters each, under SQLite's 999 variables.
_BUMP_CHUNK = 400


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


def due_trims(events: Iterable[Event], keep: int) -> dict[str, int]:
    """The channels that newly stored `events` make due for a trim, each with its newest
    seq among them (the trim's bound, read from them rather than from the channel's row).

    A channel is trimmed in batches (every tenth of the history) rather than on every
    publish: when one of its new seqs is past the history and a multiple of the batch."""
    step = max(1, keep // 10)
    last: dict[str, int] = {}
    due: set[str] = set()
    for event in events:
        channel, seq = event.channel, event.seq
        last[channel] = max(seq, last.get(channel, 0))
        if seq > keep and not seq % step:
            due.add(channel)
    return {channel: last[channel] for channel in due}


def trim(channel: str, keep: int, last: int | None = None) -> int:
    """Delete all but the newest `keep` events of a channel; returns how many went.
    `last`: a seq the caller knows the channel has reached (one it just stored), which
    spares reading the channel's row; the events after it count among those kept.

    Everything up to the bound goes, whatever an earlier trim left (one that failed,
    a process killed before its trim, a history setting lowered): a resuming client
    must never meet a hole. The delete starts at the channel's oldest row, found by its
    own index scan: on PostgreSQL a delete leaves dead index entries until vacuum, and
    "delete up to seq N" alone walked every one of them, without marking them as dead
    for the next walk (ARCHITECTURE.md, "Performance notes").

    It deletes by seq below a bound, never touching the channel row, so it does not
    wait on or block publishers of the channel.
    """
    if last is None:
        last = Channel.objects.filter(name=channel).values_list("last_seq", flat=True).first()
    if not last or last <= keep:
        return 0
    with connection.cursor() as cursor:
        cursor.execute(_trim_sql(), [channel, last - keep, channel])
        return int(cursor.rowcount)


@functools.lru_cache(maxsize=1)
def _trim_sql() -> str:
    # A plain statement: the ORM's delete() first builds a collector for cascades and
    # signals, which events never have.
    ops = connection.ops
    table, channel, seq = (ops.quote_name(n) for n in (Event._meta.db_table, "channel", "seq"))
    return (
        f"DELETE FROM {table} WHERE {channel} = %s AND {seq} <= %s "
        f"AND {seq} >= (SELECT MIN({seq}) FROM {table} WHERE {channel} = %s)"
    )
