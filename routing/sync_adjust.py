"""The counter adjust from synchronous code: Celery tasks such as the journal reaper."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import redis.exceptions as rx

from routing.limit_counters import (
    SCRIPT,
    SCRIPT_SHA,
    ChargedCounter,
    script_limit_args,
    sync_client,
)


def limits_adjust_sync(*, counters: Sequence[ChargedCounter], amounts: Sequence[int]) -> None:
    """The adjust step from synchronous code (Celery): add `amounts` to `counters`."""
    client = sync_client()
    args: list[Any] = ["adjust", "", *script_limit_args(counters=counters, amounts=amounts)]
    keys = [counter.key for counter in counters]
    try:
        client.evalsha(SCRIPT_SHA, len(keys), *keys, *args)
    except rx.NoScriptError:
        client.script_load(SCRIPT)
        client.evalsha(SCRIPT_SHA, len(keys), *keys, *args)
