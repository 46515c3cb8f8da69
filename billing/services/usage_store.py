"""A usage event's database row: cleaned so the database can always store its tokens.

An event the database refuses is stored without its metadata (noted on the row); only one that
cannot be stored at all (no workspace, group or request id) raises.
"""

from __future__ import annotations

import json
import re
from datetime import datetime
from decimal import Decimal
from typing import Any

from django.db import (
    DatabaseError,
    InterfaceError,
    OperationalError,
    connection,
    connections,
    transaction,
)
from django.db.models import JSONField
from django.utils import timezone

from billing.models import EventStatus, UsageEvent
from billing.sanitize import count_clean, float_clean, metadata_sanitize, text_clean

_STAGE = "usage_event_stage"
_STATUSES = frozenset(EventStatus.values)
CURRENCY = re.compile(r"^[A-Z]{3}$")
AMOUNT = re.compile(r"^[0-9]{1,28}\.[0-9]{1,12}$")


def usage_events_store(*, events: list[dict[str, Any]]) -> None:
    """Insert events (the shape usage_event_record takes), skipping request ids already stored.

    On PostgreSQL the rows are copied into a staging table dropped at
    commit and inserted from there with ON CONFLICT DO NOTHING: several times faster than a
    parameterised INSERT, and a replayed event still never makes a second row.
    """
    rows = [usage_event_values(event=event) for event in events]
    if connection.vendor != "postgresql":
        UsageEvent.objects.bulk_create([UsageEvent(**row) for row in rows], ignore_conflicts=True)
        return
    fields = UsageEvent._meta.concrete_fields
    table = connection.ops.quote_name(UsageEvent._meta.db_table)
    columns = ", ".join(connection.ops.quote_name(field.column) for field in fields)
    now = timezone.now()
    # What the model would fill in itself (defaults, auto_now_add), per column, once a batch.
    implied = {
        field.attname: now if getattr(field, "auto_now_add", False) else field.get_default()
        for field in fields
    }
    jsons = {field.attname for field in fields if isinstance(field, JSONField)}
    names = [field.attname for field in fields]
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(f"CREATE TEMP TABLE {_STAGE} (LIKE {table}) ON COMMIT DROP")
        with cursor.cursor.copy(f"COPY {_STAGE} ({columns}) FROM STDIN") as copy:
            for row in rows:
                for name in jsons:
                    row[name] = json.dumps(row[name], separators=(",", ":"))
                copy.write_row([row[name] if name in row else implied[name] for name in names])
        cursor.execute(
            f"INSERT INTO {table} ({columns}) SELECT {columns} FROM {_STAGE} ON CONFLICT DO NOTHING"
        )
        cursor.execute(f"DROP TABLE {_STAGE}")


def usage_events_store_direct(*, events: list[dict[str, Any]]) -> None:
    """Store events straight into the database, each on its own and leniently, then close this
    thread's connections: what recording does in a worker thread when Redis is down."""
    try:
        for event in events:
            usage_event_store_lenient(event=event)
    finally:
        connections.close_all()


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


def usage_event_values(*, event: dict[str, Any]) -> dict[str, Any]:
    """The UsageEvent column values (by attribute name) of one stream payload, cleaned so the
    database can always store them; the model's defaults fill the rest."""
    notes = [str(event.get("ingestNote") or "")]
    metadata, note = metadata_sanitize(event.get("requestMetadata"))
    notes.append(note)
    tokens = event.get("tokens")
    tokens = tokens if isinstance(tokens, dict) else {}
    return dict(
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
        **_cost(event.get("cost"), notes),
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
    return value if isinstance(value, str) and value in _STATUSES else "completed"


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


def _cost(value: Any, notes: list[str]) -> dict[str, Any]:
    """The cost columns of a priced event's `cost`; an unreadable one is noted, not guessed."""
    if value is None:
        return {}
    currency = value.get("currency") if isinstance(value, dict) else None
    amount = value.get("amount") if isinstance(value, dict) else None
    if not isinstance(currency, str) or not CURRENCY.match(currency):
        notes.append(f"cost {str(value)[:60]!r} unreadable: not stored")
        return {}
    if not isinstance(amount, str) or not AMOUNT.match(amount):
        notes.append(f"cost {str(value)[:60]!r} unreadable: not stored")
        return {}
    return {"cost_currency": currency, "cost_amount": Decimal(amount)}


def _count(tokens: dict[str, Any], key: str, notes: list[str]) -> int:
    number = count_clean(tokens.get(key))
    if number is None:
        notes.append(f"tokens.{key} {str(tokens.get(key))[:40]!r} is not a count: 0 stored")
        return 0
    return number
