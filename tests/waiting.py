"""Waiting on a condition (tests never sleep to wait)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator
from typing import Any


def _polls(
    predicate: Callable[[], Any], *, timeout: float, what: str
) -> Iterator[tuple[bool, Any]]:
    """Yield (done, value) for each poll; AssertionError once `timeout` s have passed."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        yield bool(value), value
        if time.monotonic() > deadline:
            raise AssertionError(f"not reached within {timeout}s: {what or 'condition'}")


def wait_until(
    predicate: Callable[[], Any], *, timeout: float = 5.0, interval: float = 0.02, what: str = ""
) -> Any:
    """Poll `predicate` until truthy and return its value; AssertionError after `timeout` s."""
    for done, value in _polls(predicate, timeout=timeout, what=what):
        if done:
            return value
        time.sleep(interval)


async def wait_until_async(
    predicate: Callable[[], Any], *, timeout: float = 5.0, interval: float = 0.01, what: str = ""
) -> Any:
    """`wait_until` inside a running event loop (the loop keeps running while it waits)."""
    for done, value in _polls(predicate, timeout=timeout, what=what):
        if done:
            return value
        await asyncio.sleep(interval)
