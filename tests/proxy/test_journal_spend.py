"""A dead worker's request on a priced model: its cancelled event carries the cost of the estimated
tokens, at the prices it was admitted at, and its SPEND reservation settles to that cost."""

from __future__ import annotations

import asyncio
import json
from decimal import Decimal

import redis
from django.conf import settings

from billing.services.usage import USAGE_STREAM
from groups.limits import EnforcedLimit
from routing import journal
from routing.admission import limits_admit
from routing.authcache import KeyEntry
from routing.pricing import Pricing
from tests.proxy.conftest import SLUG
from tests.proxy.orphans import current_usage, key_entry, note_left

CHAT = "/v1/chat/completions"
SPEND = [EnforcedLimit("grp_s", "grp_s", "USAGE", "SPEND", "MONTH", 10_000_000)]
# 2.50 USD per million input tokens, admitted before any price change
PRICING = Pricing("USD", Decimal("2.50"), Decimal("10"), Decimal("1.25"))


def _entry() -> KeyEntry:
    return key_entry(group_id="grp_s", key_prefix="sky_journal00002", limits=SPEND)


def _orphan(request_id: str, *, worker: str, body_bytes: int, reserve_spend: int) -> None:
    async def run() -> None:
        admission = await limits_admit(
            limits=SPEND, reserve_tokens=1, slug=SLUG, reserve_spend=reserve_spend
        )
        await note_left(
            request_id,
            _entry(),
            admission.reservation,
            worker=worker,
            body_bytes=body_bytes,
            pricing=PRICING,
        )

    asyncio.run(run())


def _spent() -> int:
    return current_usage(SPEND)


def test_a_reaped_priced_request_is_billed_and_settled_at_its_admission_prices() -> None:
    _orphan("req-priced-1", worker="gone:9:P", body_bytes=400, reserve_spend=50_000)
    assert _spent() == 50_000
    client = redis.Redis.from_url(settings.REDIS_URL)
    client.set(journal.MISSING_PREFIX + "gone:9:P", "0")

    reaped = journal.journal_reap(client=client, now=journal.MISSING_GRACE + 1)

    assert reaped == 1
    entries: list = client.xrange(USAGE_STREAM) or []
    [(_, fields)] = entries
    event = json.loads(fields[b"e"])
    assert event["tokens"] == {"inputTokens": 100, "outputTokens": 0, "cachedInputTokens": 0}
    assert event["cost"] == {"currency": "USD", "amount": "0.00025000"}  # 100 x 2.50 micro-USD
    assert _spent() == 250
