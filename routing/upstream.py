"""The upstream HTTP client: per worker loop, one aiohttp session per distinct allowlist.

A session's resolver and connection pool serve one allowlist only, so a workspace's private range
(or a DNS answer cached under it) is never used for another workspace's upstream.
"""

from __future__ import annotations

import asyncio
import functools
import sys
import types
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

import aiohttp
from django.conf import settings

from gateway_project.kernel.deadline import deadline
from gateway_project.kernel.hot_settings import hot
from gateway_project.kernel.netguard import (
    GuardedResolver,
    address_is_allowed,
    allowlist_default,
    numeric_host,
)

# Never relayed in either direction (RFC 9110 §7.6.1) plus what the gateway sets itself.
HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "content-length",
        "host",
    }
)
_CLIENT_ONLY = HOP_BY_HOP | {
    "authorization",
    "api-key",
    "cookie",
    "x-request-metadata",
    "x-request-id",
    "accept-encoding",
    "content-type",
}
Allowlist = tuple[str, ...] | None  # a workspace's own, or None for the global default
_sessions: dict[tuple[int, Allowlist], aiohttp.ClientSession] = {}


class UpstreamTimeout(Exception):
    """No response (or no next chunk) within the configured time."""


class UpstreamTooLarge(Exception):
    """A body the gateway must hold whole is over GATEWAY_MAX_UPSTREAM_BODY_BYTES."""


def upstream_session(allowlist: Allowlist = None) -> aiohttp.ClientSession:
    """The running loop's session for `allowlist` (created on first use: never in the master)."""
    key = (id(asyncio.get_running_loop()), allowlist)
    session = _sessions.get(key)
    if session is None or session.closed:
        session = _sessions[key] = _session_build(allowlist)
    return session


_WRITE_BYTES = aiohttp.ClientRequest.write_bytes.__code__


def _eager_factory(
    loop: asyncio.AbstractEventLoop, coro: Any, *, previous: Any = None, **kwargs: Any
) -> Any:
    """A task factory that runs a request body's write at once, as aiohttp does itself on
    Python 3.12+ (`eager_start`): a JSON body goes out in the step that writes its head, with
    no task and no wait for the event loop's next step. A write that must wait (the socket's
    buffer is full) is finished by a task; any other coroutine gets the usual task."""
    if getattr(coro, "cr_code", None) is not _WRITE_BYTES or kwargs.get("context") is not None:
        if previous is not None:
            return previous(loop, coro, **kwargs)
        return asyncio.Task(coro, loop=loop, **kwargs)
    try:
        waiting = coro.send(None)
    except StopIteration as stop:
        done = loop.create_future()
        done.set_result(stop.value)
        return done
    except BaseException as exc:  # noqa: BLE001 - kept in the task, as an eager task keeps it
        failed = loop.create_future()
        failed.set_exception(exc)
        return failed
    return asyncio.Task(_resumed(coro, waiting), loop=loop)


@types.coroutine
def _resumed(coro: Any, waiting: Any) -> Any:
    """The rest of a coroutine whose first step already ran and is waiting on `waiting`."""
    while True:
        try:
            sent = yield waiting
        except GeneratorExit:
            coro.close()
            raise
        except BaseException as exc:  # noqa: BLE001 - handed to the coroutine
            try:
                waiting = coro.throw(exc)
            except StopIteration as stop:
                return stop.value
        else:
            try:
                waiting = coro.send(sent)
            except StopIteration as stop:
                return stop.value


class _EagerBodyRequest(aiohttp.ClientRequest):
    """aiohttp's request, writing its body in the step that writes its head (Python 3.11; later
    versions do so themselves)."""

    async def send(self, conn: Any) -> aiohttp.ClientResponse:
        loop = self.loop
        previous = loop.get_task_factory()
        eager = (
            _eager_factory
            if previous is None
            else functools.partial(_eager_factory, previous=previous)
        )
        loop.set_task_factory(eager)
        try:
            return await super().send(conn)
        finally:
            loop.set_task_factory(previous)


def _session_build(allowlist: Allowlist) -> aiohttp.ClientSession:
    connect = settings.GATEWAY_UPSTREAM_CONNECT_TIMEOUT
    connector = aiohttp.TCPConnector(
        limit=0,
        limit_per_host=0,
        keepalive_timeout=60,
        resolver=GuardedResolver(allowlist_default if allowlist is None else allowlist),
        ttl_dns_cache=10,
    )
    # Time to first byte and max silence are enforced per read in `upstream_open`/`body_iter`.
    timeout = aiohttp.ClientTimeout(total=None, connect=connect, sock_connect=connect)
    return aiohttp.ClientSession(
        connector=connector,
        timeout=timeout,
        auto_decompress=False,
        skip_auto_headers=("User-Agent",),
        # One session serves every customer's requests: a cookie an upstream sets (a balancer's
        # affinity, a session) is never kept, so never sent with another customer's request.
        cookie_jar=aiohttp.DummyCookieJar(),
        request_class=_EagerBodyRequest if sys.version_info < (3, 12) else aiohttp.ClientRequest,
    )


async def upstream_close() -> None:
    """Close the running loop's sessions (lifespan shutdown, tests)."""
    loop_id = id(asyncio.get_running_loop())
    for key in [key for key in _sessions if key[0] == loop_id]:
        await _sessions.pop(key).close()


def upstream_headers(
    *, client_headers: Mapping[str, str], credential: str | None, request_id: str
) -> dict[str, str]:
    """Headers sent upstream: the client's minus auth/hop-by-hop, plus the target's credential
    (the trace context is the caller's to add: tracing.headers_inject)."""
    headers = {k: v for k, v in client_headers.items() if k not in _CLIENT_ONLY}
    headers["Content-Type"] = "application/json"
    headers["Accept-Encoding"] = "identity"  # the relay rewrites bytes: no compression upstream
    headers["X-Request-ID"] = request_id  # upstream logs correlate with the usage event
    if credential:
        headers["Authorization"] = f"Bearer {credential}"
    return headers


class UpstreamRefused(Exception):
    """The upstream's address is not allowed (SSRF guard)."""


@functools.lru_cache(maxsize=1024)
def _literal_allowed(host: str, allowlist: tuple[str, ...]) -> bool:
    address = numeric_host(host)
    return address is None or address_is_allowed(address, host=host, allowlist=allowlist)


def upstream_guard(url: str, allowlist: Allowlist = None) -> None:
    """Connect-time SSRF rule for IP-literal hosts (names go through GuardedResolver)."""
    host = urlsplit(url).hostname or ""
    if not _literal_allowed(host, tuple(allowlist_default()) if allowlist is None else allowlist):
        raise UpstreamRefused(f"refusing to connect to {host!r}")


async def upstream_open(
    *,
    url: str,
    body: bytes,
    headers: dict[str, str],
    allowlist: Allowlist = None,
    timeout: float | None = None,
) -> aiohttp.ClientResponse:
    """POST and wait for the response head (bounded by `timeout`, default the first-byte one)."""
    upstream_guard(url, allowlist)
    session = upstream_session(allowlist)
    try:
        async with deadline(timeout or hot.GATEWAY_UPSTREAM_FIRST_BYTE_TIMEOUT):
            return await session.post(url, data=body, headers=headers, allow_redirects=False)
    except TimeoutError as exc:
        raise UpstreamTimeout("The upstream did not answer in time.") from exc


async def chunk_read(
    reader: aiohttp.StreamReader, *, first: bool = False, timeout: float | None = None
) -> bytes:
    """The next body bytes as they arrive (b"" at the end); too long a silence raises.

    The first read may wait up to `timeout` (default the first-byte timeout: a model still
    prefilling), later ones up to the idle timeout.
    """
    # Bytes already buffered, or the end already seen, are taken without arming a timer: most
    # reads of a JSON answer and many of a stream's never wait.
    data = reader.read_nowait()
    if data or reader.is_eof():
        return data
    limit = (timeout or hot.GATEWAY_UPSTREAM_FIRST_BYTE_TIMEOUT) if first else None
    try:
        async with deadline(limit or hot.GATEWAY_UPSTREAM_IDLE_TIMEOUT):
            return await reader.readany()
    except TimeoutError as exc:
        raise UpstreamTimeout("The upstream stopped sending.") from exc


async def body_read(response: aiohttp.ClientResponse, *, head: bytes = b"") -> bytes:
    """The whole body after `head` (bytes already read), each read bounded by the idle timeout
    and the total by GATEWAY_MAX_UPSTREAM_BODY_BYTES."""
    limit = hot.GATEWAY_MAX_UPSTREAM_BODY_BYTES
    declared = response.content_length
    if declared is not None and declared > limit:
        raise UpstreamTooLarge(f"the upstream declared {declared} bytes")
    parts, size = [head], len(head)
    while data := await chunk_read(response.content):
        size += len(data)
        if size > limit:
            raise UpstreamTooLarge(f"the upstream sent more than {limit} bytes")
        parts.append(data)
    return b"".join(parts)
