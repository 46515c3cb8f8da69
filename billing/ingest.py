"""Moves usage events from the Redis stream into UsageEvent, idempotently (unique request id).

Consumer-group semantics give at-least-once: an entry is acknowledged (and deleted) only after its
row is committed; entries a crashed consumer left pending are reclaimed after CLAIM_IDLE_MS.
"""

from __future__ import annotations

import json
import logging
import os
import socket
from datetime import datetime
from typing import Any

from django.db import DataError, IntegrityError, transaction
from django_redis import get_redis_connection
from redis.exceptions import ResponseError

from billing.models import EventStatus, UsageEvent
from billing.services import USAGE_STREAM, usage_events_store

GROUP = "ingest"
DEAD_LETTER_STREAM = "gw:usage:dead"
BATCH = 500
CLAIM_IDLE_MS = 30_000
logger = logging.getLogger(__name__)


def usage_event_build(*, event: dict[str, Any]) -> UsageEvent:
    """The UsageEvent row for one stream payload."""
    tokens = event.get("tokens") or {}
    return UsageEvent(
        idempotency_key=event["idempotencyKey"],
        request_id=event["requestId"],
        timestamp=datetime.fromisoformat(event["timestamp"].replace("Z", "+00:00")),
        workspace_id=event["workspaceId"],
        group_id=event["groupId"],
        external_entity_id=event.get("externalEntityId") or "",
        api_key_prefix=event.get("apiKeyPrefix") or "",
        model_slug=event["modelSlug"],
        request_metadata=event.get("requestMetadata") or {},
        status=event.get("status") or EventStatus.COMPLETED,
        input_tokens=int(tokens.get("inputTokens") or 0),
        output_tokens=int(tokens.get("outputTokens") or 0),
        cached_input_tokens=int(tokens.get("cachedInputTokens") or 0),
        usage_estimated=bool(event.get("usageEstimated")),
        http_status=int(event.get("httpStatus") or 200),
        target=event.get("target") or "",
        total_ms=float(event.get("totalMs") or 0),
        upstream_ms=float(event.get("upstreamMs") or 0),
        first_byte_ms=event.get("firstByteMs"),
    )


def _consumer() -> str:
    return f"{socket.gethostname()}-{os.getpid()}"


def _group_ensure(client: Any) -> None:
    try:
        client.xgroup_create(USAGE_STREAM, GROUP, id="0", mkstream=True)
    except ResponseError as exc:
        if "BUSYGROUP" not in str(exc):
            raise


def _decode(entries: list[Any]) -> tuple[list[bytes], list[dict[str, Any]]]:
    ids, events = [], []
    for entry_id, fields in entries:
        ids.append(entry_id)
        try:
            events.append(json.loads(fields[b"e"]))
        except (KeyError, TypeError, ValueError):
            logger.error("dropping malformed usage stream entry", extra={"entry": str(entry_id)})
    return ids, events


def _store(client: Any, entries: list[Any]) -> int:
    ids, events = _decode(entries)
    if events:
        try:
            with transaction.atomic():
                usage_events_store(events=events)
        except (IntegrityError, DataError, KeyError, TypeError, ValueError):
            _store_one_by_one(client, events)
    if ids:
        pipe = client.pipeline(transaction=False)
        pipe.xack(USAGE_STREAM, GROUP, *ids)
        pipe.xdel(USAGE_STREAM, *ids)
        pipe.execute()
    return len(events)


def _store_one_by_one(client: Any, events: list[dict[str, Any]]) -> None:
    # One bad event must not block the stream: park it in a dead-letter stream for staff.
    # (A database that is down raises OperationalError above and the batch stays pending.)
    for event in events:
        try:
            with transaction.atomic():
                usage_events_store(events=[event])
        except (IntegrityError, DataError, KeyError, TypeError, ValueError):
            logger.exception("usage event parked in %s", DEAD_LETTER_STREAM)
            client.xadd(DEAD_LETTER_STREAM, {"e": json.dumps(event)})


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
