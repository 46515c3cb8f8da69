"""The inference path's writer: make a usage event durable, park one that cannot be stored.

Routing imports this module on every gateway worker, so it imports only what recording needs.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
from typing import Any

from asgiref.sync import sync_to_async
from redis.exceptions import NoScriptError, RedisError

from billing.sanitize import text_clean
from billing.services.usage_store import usage_events_store_direct

USAGE_STREAM = "gw:usage"
DEAD_LETTER_STREAM = "gw:usage:dead"
# Billing numbers every node's /metrics serves (a Redis hash: metric name -> value).
BILLING_METRICS_KEY = "gw:billing:metrics"
DEAD_LETTERS_METRIC = "gateway_usage_dead_letters_total"
QUARANTINED_EVENTS_METRIC = "gateway_billing_quarantined_events"
QUARANTINED_DELIVERIES_METRIC = "gateway_billing_quarantined_deliveries"
# Field prefix of the webhook attempt counters, one field per outcome ("...:succeeded").
WEBHOOK_DELIVERIES_METRIC = "gateway_webhook_deliveries_total"
logger = logging.getLogger("billing.usage")


# KEYS: the usage stream, the in-flight journal hash. ARGV: event JSON, the journal field.
_RECORD_SCRIPT = """
redis.call('XADD', KEYS[1], '*', 'e', ARGV[1])
redis.call('HDEL', KEYS[2], ARGV[2])
return 1
"""
_RECORD_SHA = hashlib.sha1(_RECORD_SCRIPT.encode()).hexdigest()


async def usage_event_record(
    *, client: Any, event: dict[str, Any], note: tuple[str, str] | None = None
) -> None:
    """Make one usage event durable: XADD to the usage stream, or a DB insert if Redis fails.

    `note` (hash key, field) is the request's in-flight journal note, removed in the same step.
    """
    payload = json.dumps(event, separators=(",", ":"))
    try:
        if note is None:
            await client.xadd(USAGE_STREAM, {"e": payload})
            return
        try:
            await client.evalsha(_RECORD_SHA, 2, USAGE_STREAM, note[0], payload, note[1])
        except NoScriptError:
            await client.script_load(_RECORD_SCRIPT)
            await client.evalsha(_RECORD_SHA, 2, USAGE_STREAM, note[0], payload, note[1])
    except (RedisError, OSError):
        logger.warning("usage stream unavailable; inserting directly", exc_info=True)
        await sync_to_async(usage_events_store_direct, thread_sensitive=False)(events=[event])
        if note is not None:
            # Stored: the note may go (if it stays, a reaper's event for it is a duplicate
            # request id, which ingest drops).
            with contextlib.suppress(RedisError, OSError):
                await client.hdel(*note)


def usage_dead_letter_park(*, client: Any, raw: bytes, error: str) -> None:
    """Keep a usage event that cannot be stored at all in the dead-letter stream, with its error,
    and count it for /metrics."""
    error = text_clean(error)[:500]
    logger.error("usage event parked in %s: %s", DEAD_LETTER_STREAM, error)
    pipe = client.pipeline(transaction=False)
    pipe.xadd(DEAD_LETTER_STREAM, {"e": raw, "error": error})
    pipe.hincrby(BILLING_METRICS_KEY, DEAD_LETTERS_METRIC, 1)
    pipe.execute()
