"""The counter adjust from synchronous code: Celery tasks such as the journal reaper."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import redis.exceptions as rx

from routing.limit_counters import PERIOD_US, SCRIPT, SCRIPT_SHA, ChargedCounter, sync_client


def limits_adjust_sync(*, counters: Sequence[ChargedCounter], amounts: Sequence[int]) -> None:
    """The adjust step from synchronous code (Celery): add `amounts` to `counters`."""
    client = sync_client()
    args: list[Any] = ["adjust", ""]
    for counter, amount in zip(counters, amounts, strict=True):
        args += [PERIOD_US[counter.unit], counter.threshold, amount]
    keys = [counter.key for counter in counters]
    try:
        client.evalsha(SCRIPT_SHA, len(keys), *keys, *args)
    except rx.NoScriptError:
        client.script_load(SCRIPT)
        client.evalsha(SCRIPT_SHA, len(keys), *keys, *args)
