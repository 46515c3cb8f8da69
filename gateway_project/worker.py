"""The gunicorn worker class: `gunicorn -k gateway_project.worker.GatewayWorker ...`.

uvicorn's httptools protocol keeps reading a request line and headers for as long as a client sends
them (h11 stops at 16 KiB, httptools never): one connection can grow a worker's memory without
bound before any authentication. This worker caps the request head at
GATEWAY_MAX_REQUEST_HEAD_BYTES and answers 431 past it.
"""

from __future__ import annotations

import sys
from typing import Any

from django.conf import settings
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn_worker import UvicornWorker

from gateway_project.drain import DrainingServer

# gunicorn's exit status for a worker that could not boot (gunicorn.arbiter.Arbiter).
WORKER_BOOT_ERROR = 3
HEAD_TOO_LARGE = (
    b"HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-type: application/json\r\n"
    b"connection: close\r\ncontent-length: %d\r\n\r\n%s"
)


class BoundedHeadProtocol(HttpToolsProtocol):
    """httptools' HTTP/1.1 protocol with a bound on the request line plus headers."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._head_limit: int = settings.GATEWAY_MAX_REQUEST_HEAD_BYTES
        self._in_head = True
        self._head_bytes = 0

    def data_received(self, data: bytes) -> None:
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

    def on_headers_complete(self) -> None:
        self._in_head = False
        super().on_headers_complete()

    def _refuse(self) -> None:
        body = (
            b'{"error": {"message": "The request line and headers exceed %d bytes.", '
            b'"type": "invalid_request_error", "code": "request_header_too_large", '
            b'"param": null}}' % self._head_limit
        )
        self.transport.write(HEAD_TOO_LARGE % (len(body), body))
        self.transport.close()


class GatewayWorker(UvicornWorker):  # type: ignore[misc]  # untyped base
    """uvicorn_worker.UvicornWorker with the bounded request head and a draining shutdown."""

    # Drained already when uvicorn's own shutdown starts: what still runs then is past the bound.
    CONFIG_KWARGS: dict[str, Any] = {
        "loop": "auto",
        "http": BoundedHeadProtocol,
        "timeout_graceful_shutdown": 1,
    }

    async def _serve(self) -> None:
        self.config.app = self.wsgi
        server = DrainingServer(config=self.config)
        self._install_sigquit_handler()
        await server.serve(sockets=self.sockets)
        if not server.started:
            sys.exit(WORKER_BOOT_ERROR)
