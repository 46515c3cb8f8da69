"""Per-worker lifecycle of the data plane: started inside the worker's loop, never in the master."""

from __future__ import annotations

import asyncio

from routing import authcache
from routing.journal import flush_loop, heartbeat_loop
from routing.limiter import adjustments_drain
from routing.metrics import metrics_publish_loop
from routing.redis_pool import close_all, main_redis
from routing.upstream import upstream_close, upstream_session


async def proxy_startup() -> None:
    """Lifespan startup (inside the worker's loop): HTTP session and the invalidation listener."""
    upstream_session()
    listener_ensure()


SHUTDOWN_DRAIN_SECONDS = 5.0
_background: dict[int, tuple[list[asyncio.Task[None]], asyncio.Event]] = {}


def listener_ensure() -> None:
    """Start this loop's cache invalidation listener and metrics publisher once."""
    loop_id = id(asyncio.get_running_loop())
    if loop_id not in _background:
        stop = asyncio.Event()
        tasks = [
            asyncio.create_task(authcache.cache_listen(stop=stop)),
            asyncio.create_task(metrics_publish_loop(main_redis(), stop=stop)),
            asyncio.create_task(heartbeat_loop(main_redis(), stop=stop)),
            asyncio.create_task(flush_loop(main_redis(), stop=stop)),
        ]
        _background[loop_id] = (tasks, stop)


async def proxy_shutdown() -> None:
    """Lifespan shutdown: stop the listener, close the HTTP session and Redis clients."""
    entry = _background.pop(id(asyncio.get_running_loop()), None)
    if entry is not None:
        tasks, stop = entry
        stop.set()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    await upstream_close()
    await adjustments_drain(timeout=SHUTDOWN_DRAIN_SECONDS)
    await close_all()
