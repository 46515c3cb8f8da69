"""Graceful shutdown of a gateway node.

On SIGTERM a node first drains: /readyz answers 503 (its balancer stops sending traffic), every new
request but /healthz gets 503 `draining`, and requests already running (streams included) go on.
Once none is left, or GATEWAY_SHUTDOWN_TIMEOUT seconds have passed, the node stops listening and
whatever still runs is cancelled. gunicorn's graceful timeout (set by `gateway serve`) is longer.
"""

from __future__ import annotations

import time

from django.conf import settings
from uvicorn import Server

from gateway_project.kernel.errors import GatewayError

LIVENESS_PATH = "/healthz"
_state = {"draining": False}


class Draining(GatewayError):
    """This node is shutting down: the client retries on another one."""

    status = 503
    type = "service_unavailable_error"
    code = "draining"


def draining() -> bool:
    """True once this process has begun its shutdown."""
    return _state["draining"]


def drain_refusal(path: str) -> Draining | None:
    """The 503 a request gets while this process drains (liveness still answers)."""
    if not _state["draining"] or path == LIVENESS_PATH:
        return None
    return Draining(
        "This gateway node is shutting down; retry the request.",
        headers={"Retry-After": "1", "Connection": "close"},
    )


class DrainingServer(Server):
    """uvicorn's server that drains before it stops listening (see the module docstring)."""

    drain_deadline: float | None = None

    async def on_tick(self, counter: int) -> bool:
        exiting = await super().on_tick(counter)
        if not exiting or self.force_exit:
            return exiting
        if self.drain_deadline is None:
            _state["draining"] = True
            self.drain_deadline = time.monotonic() + settings.GATEWAY_SHUTDOWN_TIMEOUT
        return not self.server_state.tasks or time.monotonic() >= self.drain_deadline
