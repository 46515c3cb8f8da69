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
from datetime import datetime
from typing import Any

from django.db import DatabaseError, InterfaceError, OperationalError, connection, transaction
from django.utils import timezone
from django_redis import get_redis_connection
from redis.exceptions import ResponseError

from billing.models import EventStatus, UsageEvent
from billing.sanitize import count_clean, float_clean, metadata_sanitize, text_clean
from billing.services import (
    USAGE_STREAM,
    usage_dead_letter_park,
    usage_events_store,
)

GROUP = "ingest"
BATCH = 500
CLAIM_IDLE_MS = 30_000
logger = logging.getLogger(__name__)


def usage_event_build(*, event: dict[str, Any]) -> UsageEvent:
    """The UsageEvent row for one stream payload, cleaned so the database can always store it."""
    notes = [str(event.get("ingestNote") or "")]
    metadata, note = metadata_sanitize(event.get("requestMetadata"))
    notes.append(note)
    tokens = event.get("tokens")
    tokens = tokens if isinstance(tokens, dict) else {}
    return UsageEvent(
        idempotency_key=_text(event, "idempotencyKey", 26, notes, required=True),
        request_id=_text(event, "requestId", 64, notes, required=True),
        timestamp=_timestamp(event.get("timestamp"), notes),
        workspace_id=_text(event, "workspaceId", 40, notes, required=True),
        group_id=_text(event, "groupId", 40, notes, required=True),
        external_entity_id=_text(event, "externalEntityId", 255, notes),
        api_key_prefix=_text(event, "apiKeyPrefix", 16, notes),
        model_slug=_text(event, "modelSlug", 201, notes, required=True),
        request_metadata=metadata,
        status=_status(event.get("status")),
        input_tokens=_count(tokens, "inputTokens", notes),
        output_tokens=_count(tokens, "outputTokens", notes),
        cached_input_tokens=_count(tokens, "cachedInputTokens", notes),
        usage_estimated=bool(event.get("usageEstimated")),
        http_status=_http_status(event.get("httpStatus")),
        target=_text(event, "target", 64, notes),
        total_ms=float_clean(event.get("totalMs") or 0) or 0.0,
        upstream_ms=float_clean(event.get("upstreamMs") or 0) or 0.0,
        first_byte_ms=float_clean(event.get("firstByteMs")),
        ingest_note=text_clean("; ".join(n for n in notes if n))[:500],
    )


def _text(
    event: dict[str, Any], key: str, limit: int, notes: list[str], *, required: bool = False
) -> str:
    """A text column's value; a key column that would need changing makes the event unstorable."""
    value = event.get(key)
    if not isinstance(value, str) or not value:
        if required:
            raise KeyError(f"{key} is missing or not a string")
        if value not in (None, ""):
            notes.append(f"{key}: not a string, left empty")
        return ""
    clean = text_clean(value)
    if clean != value or len(clean) > limit:
        if required:
            raise ValueError(f"{key} cannot be stored as it is")
        notes.append(f"{key}: cleaned to fit")
    return clean[:limit]


def _status(value: Any) -> str:
    return value if isinstance(value, str) and value in EventStatus.values else "completed"


def _http_status(value: Any) -> int:
    number = float_clean(value or 200)
    return int(number) if number is not None and 0 <= number <= 32767 else 0


def _timestamp(value: Any, notes: list[str]) -> datetime:
    try:
        moment = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        moment = None
    if moment is None or moment.tzinfo is None:
        notes.append(f"timestamp {str(value)[:40]!r} unreadable: ingest time used")
        return timezone.now()
    return moment


def _count(tokens: dict[str, Any], key: str, notes: list[str]) -> int:
    number = count_clean(tokens.get(key))
    if number is None:
        notes.append(f"tokens.{key} {str(tokens.get(key))[:40]!r} is not a count: 0 stored")
        return 0
    return number


def _consumer() -> str:
    return f"{socket.gethostname()}-{os.getpid()}"


def _group_ensure(client: Any) -> None:
    try:
        client.xgroup_create(USAGE_STREAM, GROUP, id="0", mkstream=True)
    except ResponseError as exc:
        if "BUSYGROUP" not in str(exc):
            raise


def _decode(client: Any, entries: list[Any]) -> tuple[list[bytes], list[dict[str, Any]]]:
    ids, events = [], []
    for entry_id, fields in entries:
        ids.append(entry_id)
        raw = fields.get(b"e") if isinstance(fields, dict) else None
        try:
            event = json.loads(raw) if raw is not None else None
        except (TypeError, ValueError, RecursionError) as exc:
            event, error = None, f"unreadable stream entry: {exc}"
        else:
            error = "not a JSON object" if raw is not None else "no event in the stream entry"
        if isinstance(event, dict):
            events.append(event)
        else:
            usage_dead_letter_park(
                client=client, raw=raw if isinstance(raw, bytes) else b"", error=error
            )
    return ids, events


def _store(client: Any, entries: list[Any]) -> int:
    ids, events = _decode(client, entries)
    stored = len(events)
    if events:
        try:
            with transaction.atomic():
                usage_events_store(events=events)
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


def usage_event_store_lenient(*, event: dict[str, Any]) -> None:
    """Store one event; if the database refuses it, store it without its metadata, noted.

    Raises only when even that is refused (no workspace or group, no request id...).
    """
    try:
        with transaction.atomic():
            usage_events_store(events=[event])
        return
    except Exception as exc:  # noqa: BLE001 - any refusal: the tokens are stored all the same
        database_down_reraise(exc)
        reason = text_clean(f"{type(exc).__name__}: {exc}")[:200]
    bare = {**event, "requestMetadata": None, "ingestNote": f"requestMetadata dropped: {reason}"}
    with transaction.atomic():
        usage_events_store(events=[bare])


def database_down_reraise(exc: Exception) -> None:
    """Re-raise `exc` when the database itself is unreachable: then nothing is the event's fault
    and the entries stay pending. Anything else is this event's problem."""
    if not isinstance(exc, OperationalError | InterfaceError):
        return
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
    except DatabaseError:
        raise exc from None


def _reclaimed(client: Any, consumer: str) -> list[Any]:
    result = client.xautoclaim(USAGE_STREAM, GROUP, consumer, CLAIM_IDLE_MS, "0-0", count=BATCH)
    return list(result[1])


def usage_ingest(*, max_batches: int = 20) -> int:
    """Move pending stream entries into the database; returns how many events were stored."""
    client = get_redis_connection("default")
    _group_ensure(client)
    consumer, stored = _consumer(), 0
    stored += _store(client, _reclaimed(client, consumer))
    for _ in range(max_batches):
        reply = client.xreadgroup(GROUP, consumer, {USAGE_STREAM: ">"}, count=BATCH)
        entries = reply[0][1] if reply else []
        if not entries:
            break
        stored += _store(client, entries)
    return stored
