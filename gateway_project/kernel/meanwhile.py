"""Work a request needs later, done while it waits on a round trip it has just started; and the
bookkeeping a finished request leaves, done in the next such wait.

A request that has written a command (to Redis, to the upstream) and awaits its answer leaves the
process idle until that answer arrives: at low load, the whole round trip. `meanwhile` runs a
plain function in that time instead of after the answer, which takes it off the request's
critical path. The function runs in the event loop's next step, before the caller resumes (the
answer's wake-up is queued after it), and must be complete in itself: what it builds is only a
head start, and a caller that finds nothing built builds it then. An exception in it is logged
and lost.

`afterwards` is for work nobody waits on (a finished request's metrics and log line): done right
after the response, it would hold up the next request on the same connection, which a client
sends as soon as it has the answer. It runs instead in the next `meanwhile` of any request of
this worker, and at the latest AFTERWARDS_LATEST seconds later, when no request waits;
`afterwards_run` runs what is left at once (before a scrape, at shutdown).
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable
from typing import Any

logger = logging.getLogger("gateway.request")

AFTERWARDS_LATEST = 0.002  # seconds

_later: deque[tuple[Callable[..., None], tuple[Any, ...]]] = deque()
# The loop whose timer will run _later (None: no timer is pending).
_timer_loop: asyncio.AbstractEventLoop | None = None


def meanwhile(function: Callable[..., None], *args: Any) -> None:
    """Run `function(*args)` in the event loop's next step, while the caller waits; then the
    bookkeeping finished requests left (`afterwards`)."""
    asyncio.get_running_loop().call_soon(_while_waiting, function, args)


def _while_waiting(function: Callable[..., None], args: tuple[Any, ...]) -> None:
    try:
        function(*args)
    except Exception:
        logger.warning("work done ahead of time failed; it is done in line", exc_info=True)
    if _later:
        afterwards_run()


def afterwards(function: Callable[..., None], *args: Any) -> None:
    """Run `function(*args)` while a request of this worker next waits on a round trip, and no
    later than AFTERWARDS_LATEST seconds from now."""
    global _timer_loop
    _later.append((function, args))
    loop = asyncio.get_running_loop()
    if _timer_loop is not loop:
        _timer_loop = loop
        loop.call_later(AFTERWARDS_LATEST, _timer_run)


def _timer_run() -> None:
    global _timer_loop
    _timer_loop = None
    afterwards_run()


def afterwards_run() -> None:
    """Run every piece of work `afterwards` holds, now."""
    later = _later
    while later:
        try:
            function, args = later.popleft()
        except IndexError:  # taken by another thread's loop (tests run several)
            return
        try:
            function(*args)
        except Exception:
            logger.warning("a finished request's bookkeeping failed", exc_info=True)
