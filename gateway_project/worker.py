"""The gunicorn worker class: `gunicorn -k gateway_project.worker.GatewayWorker ...`.

uvicorn's httptools protocol keeps reading a request line and headers for as long as a client sends
them (h11 stops at 16 KiB, httptools never): one connection can grow a worker's memory without
bound before any authentication. This worker caps the request head at
GATEWAY_MAX_REQUEST_HEAD_BYTES and answers 431 past it.

uvicorn writes a response's head and its body in two socket writes (two TCP segments the client
must take apart, two wake-ups). This worker's protocol holds the head back until the first body
bytes, or the end of the current loop step when none follow at once, and writes both together.

An application learns that its client went away by awaiting `receive()` in a task of its own.
This worker also offers each request a `DisconnectHook` (gateway_project/kernel/connection_hook.py)
in the scope's extensions: a callback set on it is called when the connection is lost, with no
task or future per request.
"""

from __future__ import annotations

import asyncio
import socket
import sys
from typing import Any

from django.conf import settings
from uvicorn import Config
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol, RequestResponseCycle
from uvicorn_worker import UvicornWorker

from gateway_project.balance import Acceptor, Ledger, Share, connection_closed
from gateway_project.drain import DrainingServer
from gateway_project.kernel.connection_hook import DISCONNECT_EXTENSION, DisconnectHook

# gunicorn's exit status for a worker that could not boot (gunicorn.arbiter.Arbiter).
WORKER_BOOT_ERROR = 3
HEAD_TOO_LARGE = (
    b"HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-type: application/json\r\n"
    b"connection: close\r\ncontent-length: %d\r\n\r\n%s"
)


# How long, and how much past the bound, a connection refused for its head still reads (and
# drops) what its client sends, so that the client reads the 431 rather than a reset.
REFUSE_LINGER_S = 2.0
REFUSE_LINGER_BYTES = 1024 * 1024

# Past this size the body goes out in a write of its own rather than copied behind the head.
COALESCE_MAX_BODY = 64 * 1024


class HeadHoldingTransport:
    """What one request's response cycle writes through: the response head (the write made while
    `holding`) is kept until the next write, which sends both at once, or until the end of the
    loop step it was written in (a stream whose first event is not ready yet)."""

    __slots__ = ("_transport", "_loop", "_head", "holding")

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self._transport = transport
        self._loop = loop
        self._head: bytes | None = None
        self.holding = False

    def write(self, data: bytes) -> None:
        """Hold a head; write anything else (after a held head, in the same write)."""
        if self.holding:
            self.holding = False
            self._head = data
            self._loop.call_soon(self.flush)
            return
        head = self._head
        if head is None:
            self._transport.write(data)
        elif len(data) <= COALESCE_MAX_BODY:
            self._head = None
            self._transport.write(head + data)
        else:
            self._head = None
            self._transport.writelines((head, data))

    def flush(self) -> None:
        """Write a head still held."""
        head, self._head = self._head, None
        if head is not None and not self._transport.is_closing():
            self._transport.write(head)

    def close(self) -> None:
        """Close the connection after what was written, a held head included."""
        self.flush()
        self._transport.close()

    def is_closing(self) -> bool:
        """Whether the connection is closing or closed."""
        return self._transport.is_closing()


class HeadHoldingCycle(RequestResponseCycle):
    """uvicorn's response cycle, telling its HeadHoldingTransport to hold the write a response
    start makes. A request's cycle becomes one in `_start_asgi_task`: a class rather than a
    wrapper of `send` kept on the cycle, which would tie the cycle to itself and leave every
    request's cycle, scope and transport to the cyclic garbage collector."""

    async def send(self, message: Any) -> None:
        if message["type"] == "http.response.start":
            self.transport.holding = True  # type: ignore[attr-defined]  # a HeadHoldingTransport
        await super().send(message)


class BoundedHeadProtocol(HttpToolsProtocol):
    """httptools' HTTP/1.1 protocol with a bound on the request line plus headers, writing each
    response's head together with its first body bytes."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._head_limit: int = settings.GATEWAY_MAX_REQUEST_HEAD_BYTES
        self._in_head = True
        self._head_bytes = 0
        self._refused = False
        self._hook: DisconnectHook | None = None  # the running request's

    def data_received(self, data: bytes) -> None:
        if self._refused:  # read and dropped (see _refuse), up to a bound
            self._head_bytes += len(data)
            if self._head_bytes > self._head_limit + REFUSE_LINGER_BYTES:
                self.transport.close()
            return
        super().data_received(data)
        # Counted after parsing: a chunk that also completes the head (and carries body bytes)
        # is not a head still growing.
        if self._in_head and not self.transport.is_closing():
            self._head_bytes += len(data)
            if self._head_bytes > self._head_limit:
                self._refuse()

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._in_head, self._head_bytes = True, 0

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)
        connection_closed()
        hook, self._hook = self._hook, None
        if hook is not None:
            hook.fire()

    def on_headers_complete(self) -> None:
        self._in_head = False
        super().on_headers_complete()

    def _start_asgi_task(self, cycle: RequestResponseCycle, app: Any) -> None:
        transport = HeadHoldingTransport(self.transport, self.loop)
        cycle.transport = transport  # type: ignore[assignment]  # write, close, is_closing
        cycle.__class__ = HeadHoldingCycle
        # One request runs at a time on a connection (a pipelined one starts after it).
        self._hook = hook = DisconnectHook()
        if self.transport.is_closing():
            hook.lost = True
        extensions: dict[str, Any] = cycle.scope.setdefault("extensions", {})
        extensions[DISCONNECT_EXTENSION] = hook
        super()._start_asgi_task(cycle, app)

    def _refuse(self) -> None:
        body = (
            b'{"error": {"message": "The request line and headers exceed %d bytes.", '
            b'"type": "invalid_request_error", "code": "request_header_too_large", '
            b'"param": null}}' % self._head_limit
        )
        self.transport.write(HEAD_TOO_LARGE % (len(body), body))
        self._refused = True
        if not self.transport.can_write_eof():
            self.transport.close()
            return
        # Closed at once, a socket still receiving the rest of the head is reset, and the client
        # may lose the 431 before reading it: the answer ends with a FIN, what still arrives is
        # dropped, and the connection closes when the client does, after a short linger, or past
        # REFUSE_LINGER_BYTES more.
        self.transport.write_eof()
        self.loop.call_later(REFUSE_LINGER_S, self.transport.close)


class GatewayServer(DrainingServer):
    """The draining server, accepting by gateway_project.balance's rule when given a share."""

    def __init__(self, config: Config, share: Share | None) -> None:
        super().__init__(config=config)
        self.share = share
        self.acceptors: list[Acceptor] = []

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        if self.share is None or not sockets:
            await super().startup(sockets=sockets)
            return
        await super().startup(sockets=[])  # the app starts; uvicorn itself listens nowhere
        config = self.config

        def create_protocol() -> asyncio.Protocol:
            return config.http_protocol_class(  # type: ignore[call-arg]
                config=config, server_state=self.server_state, app_state=self.lifespan.state
            )

        self.acceptors = [
            Acceptor(sock, create_protocol, self.share, ssl=config.ssl) for sock in sockets
        ]
        for acceptor in self.acceptors:
            acceptor.start()

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        for acceptor in self.acceptors:
            acceptor.stop()
        await super().shutdown(sockets=sockets)


class GatewayWorker(UvicornWorker):  # type: ignore[misc]  # untyped base
    """uvicorn_worker.UvicornWorker with the bounded request head, a draining shutdown and
    connections shared evenly with the node's other workers (gunicorn_conf gives each worker its
    row of the node's ledger before the fork)."""

    ledger: Ledger | None = None
    ledger_row: int | None = None

    # Drained already when uvicorn's own shutdown starts: what still runs then is past the bound.
    CONFIG_KWARGS: dict[str, Any] = {
        "loop": "auto",
        "http": BoundedHeadProtocol,
        "timeout_graceful_shutdown": 1,
    }

    async def _serve(self) -> None:
        self.config.app = self.wsgi
        ledger, row = self.ledger, self.ledger_row
        share = Share(ledger, row) if ledger is not None and row is not None else None
        server = GatewayServer(self.config, share)
        self._install_sigquit_handler()
        await server.serve(sockets=self.sockets)
        if not server.started:
            sys.exit(WORKER_BOOT_ERROR)
