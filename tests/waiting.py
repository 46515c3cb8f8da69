"""Waiting on a condition (tests never sleep to wait)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any


def wait_until(
    predicate: Callable[[], Any], *, timeout: float = 5.0, interval: float = 0.02, what: str = ""
) -> Any:
    """Poll `predicate` until truthy and return its value; AssertionError after `timeout` s."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"not reached within {timeout}s: {what or 'condition'}")
        time.sleep(interval)


async def wait_until_async(
    predicate: Callable[[], Any], *, timeout: float = 5.0, interval: float = 0.01, what: str = ""
) -> Any:
    """`wait_until` inside a running event loop (the loop keeps running while it waits)."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"not reached within {timeout}s: {what or 'condition'}")
        await asyncio.sleep(interval)
