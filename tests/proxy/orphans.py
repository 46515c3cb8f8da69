"""What a gateway worker killed mid-request leaves behind, for the journal and reaper tests."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import redis
from django.conf import settings

from billing.services.ingest import usage_ingest
from billing.services.usage import (
    USAGE_STREAM,
    UsageRecord,
    usage_event_key,
    usage_record_write,
    usage_timestamp,
)
from groups.limits import EnforcedLimit
from routing import journal
from routing.admission import Reservation
from routing.authcache import KeyEntry
from routing.pricing import Pricing
from routing.redis_pool import close_all
from routing.usage_read import group_usage_read
from tests.proxy.conftest import SLUG


def key_entry(*, group_id: str, key_prefix: str, limits: list[EnforcedLimit]) -> KeyEntry:
    """A cached key of `group_id` that may call SLUG under `limits`."""
    return KeyEntry(
        workspace_id=group_id.replace("grp_", "ws_"),
        onboarded=True,
        group_id=group_id,
        root_group_id=group_id,
        external_id=group_id.replace("grp_", "cust_"),
        key_prefix=key_prefix,
        allowed_slugs=frozenset({SLUG}),
        limits={SLUG: limits},
    )


def usage_record(request_id: str, entry: KeyEntry, *, event_key: str, status: str) -> UsageRecord:
    """What the gateway records for a request of `entry`'s key on SLUG: 12 tokens in, 30 out."""
    return UsageRecord(
        request_id=request_id,
        idempotency_key=event_key,
        timestamp=usage_timestamp(),
        metadata={},
        slug=SLUG,
        external_id=entry.external_id,
        key_prefix=entry.key_prefix,
        group_id=entry.group_id,
        workspace_id=entry.workspace_id,
        status=status,
        input_tokens=12,
        output_tokens=30,
        cached_input_tokens=0,
        estimated=False,
        cost=None,
        http_status=200,
        target="primary",
        total_ms=5.0,
        upstream_ms=4.0,
        first_byte_ms=1.0,
    )


def worker_record(request_id: str, entry: KeyEntry, *, event_key: str, status: str) -> None:
    """The late worker's record step for its request on SLUG (its note was written): the same
    Redis step the gateway runs."""
    record = usage_record(request_id, entry, event_key=event_key, status=status)

    async def run() -> None:
        client = redis.asyncio.Redis.from_url(settings.REDIS_URL)
        await usage_record_write(
            client=client, record=record, timeout=5, note=(journal.INFLIGHT_KEY, request_id)
        )
        await client.aclose()

    asyncio.run(run())


def ingest_twice() -> None:
    """Ingest the usage stream's one entry, then that entry delivered again, as a consumer
    reclaiming it after a crash would."""
    client = redis.Redis.from_url(settings.REDIS_URL)
    entries: list = client.xrange(USAGE_STREAM) or []
    [(_, fields)] = entries
    usage_ingest()
    client.xadd(USAGE_STREAM, {"e": fields[b"e"]})
    usage_ingest()


async def note_left(
    request_id: str,
    entry: KeyEntry,
    reservation: Reservation | None,
    *,
    worker: str,
    body_bytes: int,
    metadata: dict[str, Any] | None = None,
    pricing: Pricing | None = None,
    event_key: str = "",
) -> None:
    """Flush the in-flight note of a request on SLUG as `worker` wrote it, then close this loop's
    clients."""
    note = journal.journal_note(
        entry=entry,
        slug=SLUG,
        metadata=metadata or {},
        pricing=pricing,
        body_bytes=body_bytes,
        reservation=reservation,
        event_key=event_key or usage_event_key(),
    )
    note = json.dumps({**json.loads(note), "worker": worker})
    client = redis.asyncio.Redis.from_url(settings.REDIS_URL)
    book = journal.Journal()
    book.open(request_id, lambda: note)
    await book.flush(client)
    await client.aclose()
    await close_all()


def current_usage(limits: list[EnforcedLimit]) -> int:
    """The counter of the first of `limits` on SLUG (0 before any request)."""
    usage = group_usage_read(group=None, enforced={SLUG: limits})
    return int(usage[SLUG][0]["current_usage"] or 0)
