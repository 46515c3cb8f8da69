"""Background retries of counter adjustments that failed while the limits Redis was unreachable.

Backoff up to ADJUST_RETRY_CAP seconds between tries, for ADJUST_RETRY_WINDOW seconds in all
(a TOKEN counter refills within a minute; DAY counters are what these retries protect). A try that
timed out after Redis ran it is applied again: that error is bounded by the requests in flight at
the moment Redis went away, as is what Redis itself loses in a crash.
"""

from __future__ import annotations

import asyncio
import logging
import time

from routing.limit_counters import UNAVAILABLE, ChargedCounter, script_run

logger = logging.getLogger(__name__)

ADJUST_RETRY_FIRST = 0.2
ADJUST_RETRY_CAP = 15.0
ADJUST_RETRY_WINDOW = 900.0
_pending_adjustments: set[asyncio.Task[None]] = set()


def adjust_retry_start(
    *, counters: list[ChargedCounter], amounts: list[int], now: float | None
) -> None:
    """Keep retrying an adjustment in the background until Redis answers or the window ends."""
    task = asyncio.get_running_loop().create_task(_adjust_retry(counters, amounts, now))
    _pending_adjustments.add(task)
    task.add_done_callback(_pending_adjustments.discard)


async def _adjust_retry(
    counters: list[ChargedCounter], amounts: list[int], now: float | None
) -> None:
    delay, deadline = ADJUST_RETRY_FIRST, time.monotonic() + ADJUST_RETRY_WINDOW
    while time.monotonic() + delay < deadline:
        await asyncio.sleep(delay)
        try:
            await script_run(mode="adjust", counters=counters, amounts=amounts, now=now)
        except UNAVAILABLE:
            delay = min(delay * 2, ADJUST_RETRY_CAP)
            continue
        logger.info("Limit counters reconciled after Redis returned")
        return
    logger.error(
        "Limit counters not reconciled: Redis unreachable for %.0f s; dropped %s on %s",
        ADJUST_RETRY_WINDOW,
        amounts,
        [counter.key for counter in counters],
    )


def pending_adjustments() -> int:
    """Adjustments of this process waiting for the limits Redis to come back."""
    return len(_pending_adjustments)


async def adjustments_drain(*, timeout: float) -> None:
    """At worker shutdown: give pending adjustments `timeout` seconds, then log what is dropped."""
    if not _pending_adjustments:
        return
    _done, left = await asyncio.wait(set(_pending_adjustments), timeout=timeout)
    for task in left:
        task.cancel()
    if left:
        logger.error("Worker stopping with %d limit adjustments not reconciled", len(left))
