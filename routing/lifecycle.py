"""Per-worker lifecycle of the data plane: started inside the worker's loop, never in the master.

Each background loop runs under a supervisor: should it die (an unexpected exception, a stray
cancellation) or return before shutdown, the error is logged and the loop restarted with backoff.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Coroutine
from typing import Any

from gateway_project.kernel.meanwhile import afterwards_run
from routing.activity import activity_drain, activity_flush_loop
from routing.adjust_retry import adjustments_drain
from routing.authcache import cache_confirmed_age
from routing.cache_listener import cache_listen
from routing.journal import flush_loop, heartbeat_loop
from routing.metrics import key_cache_age, metrics_flush
from routing.periodic import every, pause
from routing.redis_pool import close_all, main_redis
from routing.upstream import upstream_close, upstream_session

SHUTDOWN_DRAIN_SECONDS = 5.0
RESTART_BACKOFF = (0.05, 0.2, 0.5, 1.0, 2.0, 5.0)
# A loop that ran this long before dying was healthy: its next death restarts it at once again.
HEALTHY_RUN_SECONDS = 30.0
Loop = Callable[[], Coroutine[Any, Any, None]]
logger = logging.getLogger(__name__)


async def proxy_startup() -> None:
    """Lifespan startup (inside the worker's loop): HTTP session and the invalidation listener."""
    upstream_session()
    listener_ensure()


class Supervisor:
    """Background loops of one event loop, each restarted (with backoff) when it ends early."""

    def __init__(self) -> None:
        self.stop = asyncio.Event()
        self.running: dict[str, asyncio.Task[None]] = {}
        self.supervisors: list[asyncio.Task[None]] = []

    def start(self, name: str, loop: Loop) -> None:
        """Run `loop()` as a task named `name`, again whenever it ends before `stop` is set."""
        self.supervisors.append(asyncio.create_task(self._supervise(name, loop), name=name))

    async def close(self) -> None:
        """Set `stop`, cancel the loops and wait for them to end."""
        self.stop.set()
        for task in self.supervisors:
            task.cancel()
        await asyncio.gather(*self.supervisors, return_exceptions=True)

    async def _supervise(self, name: str, loop: Loop) -> None:
        failures = 0
        while not self.stop.is_set():
            task = self.running[name] = asyncio.create_task(loop(), name=name)
            started = time.monotonic()
            try:
                await asyncio.wait({task})
            except asyncio.CancelledError:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
                raise
            error = None if task.cancelled() else task.exception()
            if self.stop.is_set():
                return
            if time.monotonic() - started > HEALTHY_RUN_SECONDS:
                failures = 0
            how = "was cancelled" if task.cancelled() else "failed" if error else "returned"
            logger.error("background loop %s %s; restarting it", name, how, exc_info=error)
            await pause(self.stop, RESTART_BACKOFF[min(failures, len(RESTART_BACKOFF) - 1)])
            failures += 1


_background: dict[int, Supervisor] = {}


def listener_ensure() -> None:
    """Start this loop's supervised background loops once (cache listener, metrics, journal)."""
    loop_id = id(asyncio.get_running_loop())
    if loop_id in _background:
        return
    background = _background[loop_id] = Supervisor()
    stop = background.stop
    background.start("cache-listener", lambda: cache_listen(stop=stop))
    background.start("metrics-flush", lambda: metrics_flush_loop(stop=stop))
    background.start("heartbeat", lambda: heartbeat_loop(main_redis(), stop=stop))
    background.start("journal-flush", lambda: flush_loop(main_redis(), stop=stop))
    background.start("activity-flush", lambda: activity_flush_loop(main_redis(), stop=stop))


async def metrics_flush_loop(*, stop: asyncio.Event, interval: float = 1.0) -> None:
    """Write this worker's pending metrics and its key cache age every `interval` seconds: the
    worker answering /metrics reads the others' numbers from their files, not their memory."""
    async for _ in every(stop, interval):
        key_cache_age.set(cache_confirmed_age())
        afterwards_run()
        metrics_flush()


def background_tasks() -> dict[str, asyncio.Task[None]]:
    """The background loops now running, by name, of every event loop of this process."""
    running = (b.running.items() for b in _background.values())
    return {name: task for items in running for name, task in items if not task.done()}


async def proxy_shutdown() -> None:
    """Lifespan shutdown: stop the background loops, close the HTTP session and Redis clients."""
    background = _background.pop(id(asyncio.get_running_loop()), None)
    if background is not None:
        await background.close()
    afterwards_run()  # the last requests' metrics and log lines
    metrics_flush()
    try:
        await activity_drain(main_redis())
    except Exception:  # noqa: BLE001 - shutdown goes on without the last second of activity
        logger.warning("activity not written at shutdown", exc_info=True)
    await upstream_close()
    await adjustments_drain(timeout=SHUTDOWN_DRAIN_SECONDS)
    await close_all()
