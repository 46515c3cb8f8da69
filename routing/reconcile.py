"""The last step of an inference request, after its response is out: what it reserved and did not
use is settled (unless its record's round trip did it) or given back when it produced nothing; a
note that no event ended is removed."""

from __future__ import annotations

import logging

from routing.admission import (
    Admission,
    limits_refund,
    limits_settle,
    settle_changes,
)
from routing.inference_request import InferenceRequest
from routing.journal import journal_close
from routing.limit_counters import ChargedCounter
from routing.pricing import cost_micro, micro_ceil
from routing.redis_pool import main_redis
from routing.usage import Usage

logger = logging.getLogger("gateway.request")


def settle_plan(
    request: InferenceRequest, admission: Admission | None, billed: Usage
) -> tuple[list[ChargedCounter], list[int]]:
    """The counters settling the request to `billed` changes, and by how much."""
    if admission is None or admission.reservation is None:
        return [], []
    return settle_changes(
        reservation=admission.reservation,
        actual_tokens=billed.total,
        actual_spend=_spend(request, billed),
    )


def _spend(request: InferenceRequest, billed: Usage) -> int:
    pricing = request.pricing
    return micro_ceil(cost_micro(pricing, billed)) if pricing is not None else 0


async def request_reconcile(
    request: InferenceRequest, admission: Admission | None, billed: Usage | None, *, settled: bool
) -> None:
    """Settle the reservation to `billed` (the recorded usage; None: nothing was recorded, so
    everything is given back); `settled`: the record's round trip settled it already."""
    # The response is already out: a failure here must not turn into an error for the client.
    if billed is None:
        await journal_close(main_redis(), request_id=request.request_id)
    if admission is None or settled:
        return
    try:
        if billed is not None:
            await limits_settle(
                reservation=admission.reservation,
                actual_tokens=billed.total,
                actual_spend=_spend(request, billed),
            )
        else:
            await limits_refund(reservation=admission.reservation)
    except Exception:  # noqa: BLE001 - counters self-heal as windows pass; log and go on
        logger.exception("limit reconcile failed", extra={"request_id": request.request_id})
