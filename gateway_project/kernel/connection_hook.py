"""A request's view of its client connection, offered by the gateway's worker (gateway_project/
worker.py) in the ASGI scope's extensions under DISCONNECT_EXTENSION: an application hears that
its client went away without a task per request awaiting `receive()` for it."""

from __future__ import annotations

from collections.abc import Callable

DISCONNECT_EXTENSION = "gateway.disconnect"


class DisconnectHook:
    """`lost` once the connection is gone, and `callback` (set by the application, None to stop)
    called once when that happens."""

    __slots__ = ("lost", "callback")

    def __init__(self) -> None:
        self.lost = False
        self.callback: Callable[[], None] | None = None

    def fire(self) -> None:
        """The connection is lost: call the callback, if any, once."""
        self.lost = True
        callback, self.callback = self.callback, None
        if callback is not None:
            callback()
