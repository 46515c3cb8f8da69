"""Moves usage events from the Redis stream into UsageEvent, idempotently (unique request id).

Consumer-group semantics give at-least-once: an entry is acknowledged (and deleted) only after its
row is committed; entries a crashed consumer left pending are reclaimed after CLAIM_IDLE_MS.
An event the database refuses is stored without its metadata (noted on the row) so its tokens are
billed; only one that cannot be stored at all (no workspace, group or request id) is parked in the
dead-letter stream, and counted.
"""

from __future__ import annotations

import json
import logging
import os
import socket
from typing import Any

from django.db import transaction
from django_redis import get_redis_connection
from redis.exceptions import ResponseError

from billing.services.usage import USAGE_STREAM, usage_dead_letter_park
from billing.services.usage_store import (
    database_down_reraise,
    usage_event_parse,
    usage_event_store_lenient,
    usage_events_store,
)

GROUP = "ingest"
BATCH = 2000
CLAIM_IDLE_MS = 30_000
logger = logging.getLogger(__name__)


def _consumer() -> str:
    return f"{socket.gethostname()}-{os.getpid()}"


def _group_ensure(client: Any) -> None:
    try:
        client.xgroup_create(USAGE_STREAM, GROUP, id="0", mkstream=True)
    except ResponseError as exc:
        if "BUSYGROUP" not in str(exc):
            raise


def _decode(client: Any, entries: list[Any]) -> tuple[list[bytes], list[dict[str, Any]], int]:
    """The entry ids and the events, those known clean first (how many: the int)."""
    ids: list[bytes] = []
    clean: list[dict[str, Any]] = []
    other: list[dict[str, Any]] = []
    for entry_id, fields in entries:
        ids.append(entry_id)
        raw = fields.get(b"e") if isinstance(fields, dict) else None
        try:
            event, fast = usage_event_parse(raw) if raw is not None else (None, False)
        except (TypeError, ValueError, RecursionError) as exc:
            event, error = None, f"unreadable stream entry: {exc}"
        else:
            error = "not a JSON object" if raw is not None else "no event in the stream entry"
        if isinstance(event, dict):
            (clean if fast else other).append(event)
        else:
            usage_dead_letter_park(
                client=client, raw=raw if isinstance(raw, bytes) else b"", error=error
            )
    return ids, clean + other, len(clean)


def _store(client: Any, entries: list[Any]) -> int:
    ids, events, fast = _decode(client, entries)
    stored = len(events)
    if events:
        try:
            with transaction.atomic():
                usage_events_store(events=events[:fast], clean=True)
                usage_events_store(events=events[fast:])
        except Exception as exc:  # noqa: BLE001 - then each on its own, to find the bad one
            database_down_reraise(exc)
            stored = sum(_store_one(client, event) for event in events)
    if ids:
        pipe = client.pipeline(transaction=False)
        pipe.xack(USAGE_STREAM, GROUP, *ids)
        pipe.xdel(USAGE_STREAM, *ids)
        pipe.execute()
    return stored


def _store_one(client: Any, event: dict[str, Any]) -> bool:
    """One event on its own, so a bad one cannot block the stream; parked if it is unstorable."""
    try:
        usage_event_store_lenient(event=event)
    except Exception as exc:  # noqa: BLE001 - one bad event must not block the stream
        database_down_reraise(exc)
        raw = json.dumps(event, default=str).encode()
        usage_dead_letter_park(client=client, raw=raw, error=f"{type(exc).__name__}: {exc}")
        return False
    return True


def _reclaimed(client: Any, consumer: str) -> list[Any]:
    result = client.xautoclaim(USAGE_STREAM, GROUP, consumer, CLAIM_IDLE_MS, "0-0", count=BATCH)
    return list(result[1])


def _entries(reply: Any) -> list[Any]:
    return list(reply[0][1]) if reply else []


def usage_ingest(*, max_batches: int = 20) -> int:
    """Move pending stream entries into the database; returns how many events were stored."""
    client = get_redis_connection("default")
    _group_ensure(client)
    consumer, stored = _consumer(), 0
    # This consumer's own unacknowledged entries first (a batch the database refused a moment
    # ago), then other consumers' long-idle ones.
    stored += _store(
        client, _entries(client.xreadgroup(GROUP, consumer, {USAGE_STREAM: "0"}, count=BATCH))
    )
    stored += _store(client, _reclaimed(client, consumer))
    for _ in range(max_batches):
        entries = _entries(client.xreadgroup(GROUP, consumer, {USAGE_STREAM: ">"}, count=BATCH))
        if not entries:
            break
        stored += _store(client, entries)
    return stored
