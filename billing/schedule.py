"""Webhook retries: when a failed delivery is tried next, or that it has failed."""

from __future__ import annotations

import random
from datetime import datetime, timedelta
from email.utils import parsedate_to_datetime

# Delay after the 1st, 2nd, ... failure: 5 s, 5 min, 30 min, 2 h, 5 h, 10 h, 14 h, 20 h, 24 h.
RETRY_STEPS = (5, 300, 1800, 7200, 18000, 36000, 50400, 72000, 86400)
MAX_ATTEMPTS = len(RETRY_STEPS) + 1
JITTER = 0.2


def retry_after_parse(value: str | None, *, now: datetime) -> float | None:
    """Seconds asked for by a `Retry-After` header (delta seconds or an HTTP date), else None."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        return None
    return max(0.0, (when - now).total_seconds())


def retry_delay(
    *,
    attempts: int,
    since_first: float | None = None,
    retry_after: float | None = None,
    rng: random.Random | None = None,
) -> timedelta | None:
    """Wait before the next try after `attempts` failed tries; None once the schedule is spent.

    Try n+1 is due at the published cumulative time of step n, plus up to ±20% of step n as
    jitter, counted from the first try (`since_first` seconds ago) so that jitter never accumulates;
    the last step's jitter is positive only. Together: the schedule always spans at least its
    nominal 75.6 h, so a receiver that is down for 3 days still gets every delivery afterwards.
    Between two tries there are always at least 80% of the step. A `Retry-After` is honoured but
    kept within [1x, 2x] of the step.
    """
    if attempts < 1 or attempts > len(RETRY_STEPS):
        return None
    step = RETRY_STEPS[attempts - 1]
    if retry_after is not None:
        return timedelta(seconds=min(max(retry_after, step), 2 * step))
    swing = (rng or random).uniform(-1.0, 1.0)
    if attempts == len(RETRY_STEPS):
        swing = abs(swing)
    jitter = JITTER * swing * step
    if since_first is None:
        return timedelta(seconds=step + jitter)
    due = sum(RETRY_STEPS[:attempts]) + jitter - since_first
    return timedelta(seconds=max(due, (1 - JITTER) * step))
