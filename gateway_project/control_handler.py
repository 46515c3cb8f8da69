"""Django's ASGI handler as the control plane (admin, management API, health) runs it.

Stock Django crosses from the event loop to the request's thread three times a request (the
request_started receivers, the middleware and view, the response's close) and creates a new
thread for each request. Here each request's sync work runs on one of a few long-lived threads, in
one call: request_started, the sync middleware chain and the view, then, for a complete
(non-streaming) response, its close, which sends request_finished and so returns the request's
database connection to the pool before the bytes go out. A streaming response is sent as Django
sends it, a client that leaves cancelling the sending, and closed afterwards on the same thread.

A management API call that carries no cookie runs the chain without the middleware that only
cookie-based requests (the admin) use; anything else, cookies included, runs all of MIDDLEWARE.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from tempfile import SpooledTemporaryFile
from typing import IO, Any, cast

from asgiref.sync import ThreadSensitiveContext, sync_to_async
from django.conf import settings
from django.core import signals
from django.core.exceptions import RequestAborted
from django.core.handlers.asgi import ASGIHandler, get_script_prefix
from django.core.handlers.base import BaseHandler
from django.http import FileResponse, HttpRequest, HttpResponseBase
from django.test.utils import override_settings
from django.urls import set_script_prefix

from gateway_project.access_log import MANAGEMENT_PREFIX

Scope = dict[str, Any]
Send = Callable[[Mapping[str, Any]], Awaitable[None]]
DjangoReceive = Callable[[], Awaitable[Mapping[str, Any]]]  # what ASGIHandler's stubs accept
DJANGO_EXECUTORS = 8
# What only a cookie-carrying request can use: sessions, the CSRF cookie, the session's user and
# its messages. Every management view authenticates a bearer key and is CSRF-exempt.
COOKIE_MIDDLEWARE = (
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
)


def chain_load(middleware: list[str]) -> BaseHandler:
    """Django's sync request chain over `middleware` instead of settings.MIDDLEWARE."""
    chain = BaseHandler()
    # load_middleware reads the list from settings only; this runs once, at startup.
    with override_settings(MIDDLEWARE=middleware):
        chain.load_middleware(is_async=False)
    return chain


def is_cookieless_management(request: HttpRequest) -> bool:
    """A management API call that sends no cookie (the lean chain serves it)."""
    path = request.path_info
    in_api = path == MANAGEMENT_PREFIX or path.startswith(f"{MANAGEMENT_PREFIX}/")
    return in_api and not request.META.get("HTTP_COOKIE")


class ControlPlaneHandler(ASGIHandler):
    """Django's handler with one hop per request to one of a few long-lived threads."""

    def __init__(self) -> None:
        super().__init__()
        self._idle: asyncio.Queue[ThreadPoolExecutor] | None = None
        self.full_chain = chain_load(list(settings.MIDDLEWARE))
        lean = [path for path in settings.MIDDLEWARE if path not in COOKIE_MIDDLEWARE]
        self.management_chain = chain_load(lean)

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

    async def handle(self, scope: Scope, receive: DjangoReceive, send: Send) -> None:
        """Read the body, respond in one hop to the request's thread, send the response."""
        try:
            body_file = await self.read_body(receive)
        except RequestAborted:
            return
        set_script_prefix(get_script_prefix(scope))
        try:
            respond = sync_to_async(self.respond, thread_sensitive=True)
            response = await respond(scope, body_file)
            if response.streaming:
                await self._stream(response, receive, send)
            else:
                await self.send_response(response, send)
        finally:
            body_file.close()

    def respond(
        self, scope: Scope, body_file: SpooledTemporaryFile[bytes] | IO[bytes]
    ) -> HttpResponseBase:
        """request_started, the response, and its close unless it streams (on the thread)."""
        signals.request_started.send(sender=self.__class__, scope=scope)
        request, error = self.create_request(scope, body_file)
        response = cast(HttpResponseBase, error) if request is None else self._response(request)
        if not response.streaming:
            response.close()
        return response

    def _response(self, request: HttpRequest) -> HttpResponseBase:
        chain = self.management_chain if is_cookieless_management(request) else self.full_chain
        response = chain.get_response(request)
        # The sender of request_finished, as Django's handler sets it.
        response._handler_class = self.__class__  # type: ignore[attr-defined]
        if isinstance(response, FileResponse):
            response.block_size = self.chunk_size
        return response

    async def _stream(self, response: HttpResponseBase, receive: DjangoReceive, send: Send) -> None:
        sending = asyncio.create_task(self.send_response(response, send))
        listening = asyncio.create_task(self.listen_for_disconnect(receive))
        try:
            await asyncio.wait((sending, listening), return_when=asyncio.FIRST_COMPLETED)
            for task in (listening, sending):
                task.cancel()
            for task in (listening, sending):
                with contextlib.suppress(asyncio.CancelledError, RequestAborted):
                    await task
        finally:
            await sync_to_async(response.close, thread_sensitive=True)()
