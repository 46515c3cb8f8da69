"""ASGI entry point: served by gunicorn with gateway_project.worker.GatewayWorker.

Command line: gunicorn -k gateway_project.worker.GatewayWorker gateway_project.asgi:application

Every request first passes the edge checks (gateway_project/edge.py). Inference paths (`/v1/...`
except the management API under `/v1/gateway`) and `/metrics` go to the proxy's raw ASGI app before
Django; everything else goes to Django with its body already read and bounded. Django's
thread-sensitive work runs on a small pool of reused single-thread executors instead of a new thread
per request, and a request's middleware and view run in one call on that thread.
"""

from __future__ import annotations

import asyncio
import gc
import os
from collections.abc import Awaitable, Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import django
from asgiref.sync import ThreadSensitiveContext, sync_to_async

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "gateway_project.settings")
django.setup(set_prefix=False)

from django.core.handlers.asgi import ASGIHandler  # noqa: E402
from django.core.handlers.base import BaseHandler  # noqa: E402
from django.http import HttpRequest, HttpResponseBase  # noqa: E402

from gateway_project.drain import drain_refusal, draining  # noqa: E402
from gateway_project.edge import (  # noqa: E402
    METRICS_PATH,
    body_bounded,
    body_replay,
    edge_check,
    error_send,
)
from gateway_project.kernel.errors import GatewayError  # noqa: E402
from routing.lifecycle import proxy_shutdown, proxy_startup  # noqa: E402
from routing.proxy import proxy_app  # noqa: E402

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[Mapping[str, Any]], Awaitable[None]]
DjangoReceive = Callable[[], Awaitable[Mapping[str, Any]]]  # what ASGIHandler's stubs accept
DJANGO_EXECUTORS = 8
# Allocations between two young-generation collections (CPython's default: 700).
GC_GEN0_THRESHOLD = 20_000


def collector_tune() -> None:
    """Keep the cyclic garbage collector off the loaded code and collect the young less often.

    The modules, URL patterns and caches loaded at startup live as long as the process, yet every
    full collection walked them again; and a page of 100 groups allocates tens of thousands of
    short-lived objects, so with the default threshold a control-plane request spent about a third
    of its time in the collector."""
    gc.freeze()
    gc.set_threshold(GC_GEN0_THRESHOLD, *gc.get_threshold()[1:])


class PooledExecutorASGIHandler(ASGIHandler):
    """Django's handler with each request's sync work on one of a few long-lived threads.

    Every middleware and view of ours is sync, so the async chain would cross from the event loop
    to the thread and back for each middleware hook, the view and the rendering (about 15 hops a
    request, each a context copy and two wake-ups). The sync chain, the one the test client runs,
    does all of it in one call on the request's thread."""

    def __init__(self) -> None:
        super().__init__()
        self._idle: asyncio.Queue[ThreadPoolExecutor] | None = None
        self._sync_chain = BaseHandler()
        self._sync_chain.load_middleware(is_async=False)

    async def get_response_async(self, request: HttpRequest) -> HttpResponseBase:
        """The response from the sync chain, run on the request's thread."""
        get_response = sync_to_async(self._sync_chain.get_response, thread_sensitive=True)
        return await get_response(request)

    def _pool(self) -> asyncio.Queue[ThreadPoolExecutor]:
        if self._idle is None:
            self._idle = asyncio.Queue()
            for index in range(DJANGO_EXECUTORS):
                name = f"django-{index}"
                self._idle.put_nowait(ThreadPoolExecutor(max_workers=1, thread_name_prefix=name))
        return self._idle

    async def __call__(self, scope: Scope, receive: DjangoReceive, send: Send) -> None:
        if scope["type"] != "http":
            raise ValueError(f"Django can only handle ASGI/HTTP connections, not {scope['type']}.")
        pool = self._pool()
        executor = await pool.get()
        try:
            async with ThreadSensitiveContext(executor=executor):
                await self.handle(scope, receive, send)
        finally:
            pool.put_nowait(executor)


django_app = PooledExecutorASGIHandler()
collector_tune()


def is_inference_path(path: str) -> bool:
    """Inference routes, served by the proxy (which also serves /metrics) rather than Django."""
    return path.startswith("/v1/") and not (
        path.startswith("/v1/gateway/") or path == "/v1/gateway"
    )


async def _lifespan(receive: Receive, send: Send) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            try:
                await proxy_startup()
            except Exception as exc:  # noqa: BLE001 - reported to the server, which aborts
                await send({"type": "lifespan.startup.failed", "message": repr(exc)})
                return
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await proxy_shutdown()
            await send({"type": "lifespan.shutdown.complete"})
            return


async def _http(scope: Scope, receive: Receive, send: Send) -> None:
    path = scope["path"]
    inference = is_inference_path(path)
    if inference and not draining():
        # No edge check applies to an inference path: straight to the proxy.
        await proxy_app(scope, receive, send)
        return
    to_proxy = inference or path == METRICS_PATH
    refusal = drain_refusal(path)
    if refusal is not None:
        await error_send(send, refusal)
        return
    try:
        await edge_check(scope, inference=inference)
        # Read before Django takes an executor: a slow upload holds a coroutine, not a thread.
        body = None if to_proxy else await body_bounded(scope, receive)
    except GatewayError as exc:
        await error_send(send, exc)
        return
    if to_proxy:
        await proxy_app(scope, receive, send)
    elif body is not None:
        await django_app(scope, body_replay(body, receive), send)


async def application(scope: Scope, receive: Receive, send: Send) -> None:
    """The process's one ASGI app."""
    if scope["type"] == "http":
        await _http(scope, receive, send)
    elif scope["type"] == "lifespan":
        await _lifespan(receive, send)
    else:
        await django_app(scope, receive, send)
