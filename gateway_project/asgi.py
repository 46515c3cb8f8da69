"""ASGI entry point: served by gunicorn with gateway_project.worker.GatewayWorker.

Command line: gunicorn -k gateway_project.worker.GatewayWorker gateway_project.asgi:application

Every request first passes the edge checks (gateway_project/edge.py). Inference paths (`/v1/...`
except the management API under `/v1/gateway`) and `/metrics` go to the proxy's raw ASGI app before
Django; everything else goes to Django with its body already read and bounded, through
gateway_project/control_handler.py (one hop per request to one of a few long-lived threads).
"""

from __future__ import annotations

import gc
import os
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import django

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "gateway_project.settings")
django.setup(set_prefix=False)

from gateway_project.control_handler import ControlPlaneHandler  # noqa: E402
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


django_app = ControlPlaneHandler()
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
