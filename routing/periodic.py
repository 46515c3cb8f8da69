"""Periodic work of a worker's background tasks, stoppable at once through an asyncio.Event."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator


async def pause(stop: asyncio.Event, seconds: float) -> None:
    """Wait `seconds`, or less if `stop` is set meanwhile."""
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), timeout=seconds)


async def every(stop: asyncio.Event, seconds: float) -> AsyncIterator[None]:
    """Yield at once, then every `seconds`, until `stop` is set."""
    while not stop.is_set():
        yield
        await pause(stop, seconds)
