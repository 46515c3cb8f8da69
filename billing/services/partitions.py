"""The usage event table's daily partitions on PostgreSQL: created ahead, retired after retention.

`billing_usageevent` is range-partitioned by `timestamp`, one partition per UTC day
(`billing_usageevent_p20261203`), plus a default partition (`billing_usageevent_default`) that takes
an event whose day has no partition yet (a timestamp far in the past or future), so an insert never
fails for want of one. The beat (`billing.events_partitions`, hourly) creates today's partition and
the next AHEAD_DAYS days', gives every day found in the default partition its own partition (the
rows move there), and drops whole partitions older than GATEWAY_EVENTS_RETENTION_DAYS whose events
are all final. SQLite keeps one plain table and none of this runs.

An event is final when nothing in the pipeline will touch it again on its own:
- it is batched (`batched_at` set; a quarantined event is not: it waits for a release), and
- every webhook delivery carrying it (same `batch`) is `delivered` or `failed` (its nine retries are
  spent; a staff resend sends the delivery's own frozen body, which needs no event row). A delivery
  `pending` (first try or a retry scheduled), `disabled` (parked until its endpoint is enabled
  again) or `quarantined` (waiting for a release) holds its events. An event batched while its
  workspace had no enabled endpoint has no delivery and is final.
- Events batched before deliveries named their batch cannot be matched to them: while any such
  older delivery (empty `batch`) is not final, no partition is dropped.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import DatabaseError, connection, transaction
from django.utils import timezone

from billing.models import UNSETTLED_DELIVERY_STATUSES

TABLE = "billing_usageevent"
DEFAULT_PARTITION = f"{TABLE}_default"
AHEAD_DAYS = 7
# Partition changes wait at most this long for a lock (a long query on the table), then give up
# until the next run instead of queueing every insert behind them.
LOCK_TIMEOUT = "5s"
logger = logging.getLogger(__name__)


def partition_name(day: date) -> str:
    """The name of `day`'s partition."""
    return f"{TABLE}_p{day:%Y%m%d}"


def _bounds(day: date) -> tuple[str, str]:
    return f"{day.isoformat()} 00:00:00+00", f"{(day + timedelta(days=1)).isoformat()} 00:00:00+00"


def events_partitioned() -> bool:
    """Whether the usage event table is partitioned (PostgreSQL)."""
    if connection.vendor != "postgresql":
        return False
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT 1 FROM pg_partitioned_table WHERE partrelid = to_regclass(%s)", [TABLE]
        )
        return cursor.fetchone() is not None


def partition_days() -> dict[date, str]:
    """The day partitions attached now: {day: name}."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
            "WHERE i.inhparent = to_regclass(%s)",
            [TABLE],
        )
        names = [row[0] for row in cursor.fetchall()]
    prefix = f"{TABLE}_p"
    return {
        datetime.strptime(name[len(prefix) :], "%Y%m%d").date(): name  # noqa: DTZ007 - a date
        for name in names
        if name.startswith(prefix)
    }


def partition_create(day: date) -> bool:
    """Give `day` its partition, moving its events out of the default partition; False when it
    already had one.

    The table is built on its own and attached, which holds the events table with a lock that
    lets reads and inserts go on (a plain CREATE ... PARTITION OF would stop both)."""
    name, (start, end) = partition_name(day), _bounds(day)
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(f"SET LOCAL lock_timeout = '{LOCK_TIMEOUT}'")
        if to_regclass(cursor, name):
            return False
        cursor.execute(
            f"CREATE TABLE {name} (LIKE {TABLE} INCLUDING DEFAULTS INCLUDING CONSTRAINTS)"
        )
        # The bound as a constraint spares ATTACH a scan of the new table.
        cursor.execute(
            f'ALTER TABLE {name} ADD CONSTRAINT {name}_bound CHECK ("timestamp" IS NOT NULL '
            f"AND \"timestamp\" >= '{start}' AND \"timestamp\" < '{end}')"
        )
        if to_regclass(cursor, DEFAULT_PARTITION):
            # Inserts into the default partition wait until the day's rows have moved out.
            cursor.execute(f"LOCK TABLE {DEFAULT_PARTITION} IN SHARE ROW EXCLUSIVE MODE")
            cursor.execute(
                f"WITH moved AS (DELETE FROM {DEFAULT_PARTITION} WHERE \"timestamp\" >= '{start}' "
                f"AND \"timestamp\" < '{end}' RETURNING *) INSERT INTO {name} SELECT * FROM moved"
            )
        cursor.execute(
            f"ALTER TABLE {TABLE} ATTACH PARTITION {name} FOR VALUES FROM ('{start}') TO ('{end}')"
        )
        cursor.execute(f"ALTER TABLE {name} DROP CONSTRAINT {name}_bound")
    return True


def to_regclass(cursor: Any, name: str) -> bool:
    """Whether a table (or index) of that name exists."""
    cursor.execute("SELECT to_regclass(%s)", [name])
    return bool(cursor.fetchone()[0] is not None)


def default_partition_days() -> list[date]:
    """The UTC days of the events waiting in the default partition."""
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT DISTINCT (\"timestamp\" AT TIME ZONE 'UTC')::date FROM {DEFAULT_PARTITION}"
        )
        return sorted(row[0] for row in cursor.fetchall())


def partitions_ensure(
    *, today: date | None = None, behind: int = 1, ahead: int = AHEAD_DAYS
) -> list[str]:
    """Create the partitions of the `behind` days before today, today and `ahead` days after it,
    and of every day an event in the default partition has; returns the names created."""
    today = today or timezone.now().astimezone(UTC).date()
    days = {today + timedelta(days=n) for n in range(-behind, ahead + 1)}
    days |= set(default_partition_days())
    created = []
    for day in sorted(days - set(partition_days())):
        try:
            if partition_create(day):
                created.append(partition_name(day))
        except DatabaseError:  # a lock not granted in time, a concurrent run: the next run retries
            logger.warning(
                "usage event partition %s not created", partition_name(day), exc_info=True
            )
    return created


@dataclass(frozen=True)
class Retirement:
    """What one retention pass did: the partitions dropped, and those past retention that were
    kept because an event in them is not final (with why)."""

    dropped: list[str]
    kept: dict[str, str]


def partitions_retire(
    *, today: date | None = None, retention_days: int | None = None
) -> Retirement:
    """Drop every day partition older than the retention whose events are all final."""
    keep = settings.GATEWAY_EVENTS_RETENTION_DAYS if retention_days is None else retention_days
    if keep <= 0:
        return Retirement([], {})
    today = today or timezone.now().astimezone(UTC).date()
    cutoff = today - timedelta(days=keep)
    dropped, kept = [], {}
    for day, name in sorted(partition_days().items()):
        if day >= cutoff:
            break
        try:
            reason = _partition_drop(name)
        except DatabaseError as exc:  # a lock not granted in time: the next run tries again
            reason = f"not dropped this time: {exc}"
        if reason:
            kept[name] = reason
            logger.warning("usage event partition %s kept past retention: %s", name, reason)
        else:
            dropped.append(name)
    if dropped:
        logger.info("usage event partitions dropped after retention: %s", ", ".join(dropped))
    return Retirement(dropped, kept)


def _partition_drop(name: str) -> str:
    """Drop one partition if all its events are final; else say why it stays."""
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(f"SET LOCAL lock_timeout = '{LOCK_TIMEOUT}'")
        # No event enters the partition or changes state while it is checked and dropped.
        cursor.execute(f"LOCK TABLE {name} IN SHARE MODE")
        reason = _unfinal(cursor, name)
        if not reason:
            cursor.execute(f"DROP TABLE {name}")
        return reason


def _unfinal(cursor: Any, name: str) -> str:
    """Why some event of partition `name` is not final ("" when every one is)."""
    run = cursor.execute
    run(f"SELECT 1 FROM {name} WHERE batched_at IS NULL LIMIT 1")
    if cursor.fetchone():
        return "an event is not batched yet (or quarantined)"
    unsettled = ", ".join(f"'{status}'" for status in UNSETTLED_DELIVERY_STATUSES)
    # Driven from the few deliveries not final, each looked up in the partition's batch index.
    run(
        "SELECT 1 FROM billing_webhookdelivery WHERE batch = '' "
        f"AND status IN ({unsettled}) LIMIT 1"
    )
    if cursor.fetchone():
        return "a delivery from before deliveries named their events is not final"
    run(
        f"SELECT 1 FROM billing_webhookdelivery d WHERE d.status IN ({unsettled}) "
        f"AND d.batch <> '' AND EXISTS (SELECT 1 FROM {name} e WHERE e.batch = d.batch) LIMIT 1"
    )
    if cursor.fetchone():
        return "an event is in a delivery still pending, disabled or quarantined"
    return ""


def events_partitions_maintain() -> Retirement | None:
    """Create the partitions ahead and retire old ones (None where the table is not partitioned)."""
    if not events_partitioned():
        return None
    partitions_ensure()
    return partitions_retire()
