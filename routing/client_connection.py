"""The client side of a raw ASGI inference request: the response sent, a disconnect noticed."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from gateway_project.kernel.connection_hook import DisconnectHook
from gateway_project.kernel.errors import GatewayError, error_bytes

Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
JSON_HEADERS = [(b"content-type", b"application/json")]


class Responder:
    """Sends the response; every response carries X-Request-ID and the limit headers."""

    __slots__ = ("_send", "started", "status", "extra")

    def __init__(self, send: Send, *, request_id: str) -> None:
        self._send = send
        self.started = False
        self.status = 0
        self.extra: list[tuple[bytes, bytes]] = [(b"x-request-id", request_id.encode())]

    def header_add(self, name: str, value: str) -> None:
        """Add a header to whatever response is sent later."""
        self.extra.append((name.lower().encode(), value.encode("latin-1")))

    async def start(self, status: int, headers: list[tuple[bytes, bytes]]) -> None:
        """Send the response head."""
        self.started, self.status = True, status
        message = {"type": "http.response.start", "status": status, "headers": headers + self.extra}
        await self._send(message)

    async def body(self, data: bytes, *, more: bool = False) -> None:
        """Send body bytes (`more=False` ends the response)."""
        await self._send({"type": "http.response.body", "body": data, "more_body": more})

    async def json(
        self, status: int, data: bytes, headers: list[tuple[bytes, bytes]] | None = None
    ) -> None:
        """A complete JSON response."""
        length = [(b"content-length", str(len(data)).encode())]
        await self.start(status, JSON_HEADERS + length + (headers or []))
        await self.body(data)

    async def error(self, exc: GatewayError) -> None:
        """The error envelope for `exc` (its headers included)."""
        for name, value in exc.headers.items():
            self.header_add(name, value)
        data = error_bytes(message=exc.message, type=exc.type, code=exc.code, param=exc.param)
        await self.json(exc.status, data)


class DisconnectWatch:
    """Cancels the request's task when the client goes away, while armed.

    Under the gateway's worker the connection's own hook says so (gateway_project/kernel/
    connection_hook.py); under any other ASGI server a task waits on `receive()` for
    `http.disconnect`.
    """

    __slots__ = ("_task", "_waiter", "_hook", "armed", "fired")

    def __init__(self, receive: Receive, hook: DisconnectHook | None = None) -> None:
        self._task = asyncio.current_task()
        self.armed, self.fired = True, False
        self._hook = hook
        self._waiter: asyncio.Future[Any] | None = None
        if hook is None:
            self._waiter = asyncio.ensure_future(receive())
            self._waiter.add_done_callback(self._done)
        elif hook.lost:
            self._lost()
        else:
            hook.callback = self._lost

    def _done(self, waiter: asyncio.Future[Any]) -> None:
        if waiter.cancelled() or waiter.exception() is not None:
            return
        if waiter.result().get("type") == "http.disconnect":
            self._lost()

    def _lost(self) -> None:
        if self.armed and self._task is not None:
            self.fired = True
            self._task.cancel()

    def disarm(self) -> None:
        """Stop watching (before the last byte: a completed response reads as a disconnect)."""
        self.armed = False
        if self._hook is not None:
            self._hook.callback = None
        elif self._waiter is not None and not self._waiter.done():
            self._waiter.cancel()

    def absorb(self) -> bool:
        """In `except CancelledError`: True (cancel undone) when the client left."""
        if not self.fired or self._task is None:
            return False
        self._task.uncancel()
        self.fired = False
        return True
