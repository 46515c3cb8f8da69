"""Work a request needs later, done while it waits on a round trip it has just started.

A request that has written a command (to Redis, to the upstream) and awaits its answer leaves the
process idle until that answer arrives: at low load, the whole round trip. `meanwhile` runs a
plain function in that time instead of after the answer, which takes it off the request's
critical path. The function runs in the event loop's next step, before the caller resumes (the
answer's wake-up is queued after it), and must be complete in itself: what it builds is only a
head start, and a caller that finds nothing built builds it then. An exception in it is logged
and lost.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

logger = logging.getLogger("gateway.request")


def meanwhile(function: Callable[..., None], *args: Any) -> None:
    """Run `function(*args)` in the event loop's next step, while the caller waits."""
    asyncio.get_running_loop().call_soon(_guarded, function, args)


def _guarded(function: Callable[..., None], args: tuple[Any, ...]) -> None:
    try:
        function(*args)
    except Exception:
        logger.warning("work done ahead of time failed; it is done in line", exc_info=True)
