"""Proxy suite fixtures: the real ASGI app under uvicorn on a thread, fake upstreams, tenants."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import uvicorn

from groups.models import Group, Workspace
from groups.services import group_create
from groups.services.audit import SYSTEM_ACTOR
from keys.services import api_key_create
from routing import authcache
from routing.circuit import circuit_reset
from routing.models import Endpoint
from routing.services import endpoint_create
from tests.fakes.model_server import FakeModelServerThread
from tests.waiting import wait_until

SLUG = "acme/llama"
UPSTREAM_MODEL = "fake-model"


class _PromptServer(uvicorn.Server):
    """uvicorn's server, woken as soon as it is told to exit instead of at its next 0.1 s tick (a
    tick a test, as the gateway fixture stops a server after each test)."""

    async def main_loop(self) -> None:
        self.woken = asyncio.Event()
        self.loop = asyncio.get_running_loop()
        counter = 0
        while not await self.on_tick(counter):
            counter = (counter + 1) % 864000
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.woken.wait(), timeout=0.1)

    def exit_now(self) -> None:
        """Exit, lifespan shutdown included, at once."""
        self.should_exit = True
        if loop := getattr(self, "loop", None):
            loop.call_soon_threadsafe(self.woken.set)


class GatewayThread:
    """gateway_project.asgi.application served by uvicorn (lifespan on) on a daemon thread, with
    the gateway worker's HTTP protocol (`plain`: uvicorn's own, as any other ASGI server)."""

    def __init__(self, *, plain: bool = False) -> None:
        from gateway_project.asgi import application
        from gateway_project.worker import BoundedHeadProtocol

        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        config = uvicorn.Config(
            application,
            lifespan="on",
            log_level="warning",
            access_log=False,
            http="httptools" if plain else BoundedHeadProtocol,
        )
        self.server = _PromptServer(config)
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]})

    @property
    def url(self) -> str:
        """Root URL of the gateway."""
        return f"http://127.0.0.1:{self.sock.getsockname()[1]}"

    def start(self) -> GatewayThread:
        """Serve and wait until started."""
        self.thread.start()
        wait_until(lambda: self.server.started, timeout=10)
        return self

    def stop(self) -> None:
        """Shut down (runs the lifespan shutdown)."""
        self.server.exit_now()
        self.thread.join(timeout=10)
        self.sock.close()


@pytest.fixture
def gateway(transactional_db: None) -> Iterator[GatewayThread]:
    """The gateway as a real server; its threads see committed test data."""
    yield from gateway_serve()


@pytest.fixture
def gateway_plain(transactional_db: None) -> Iterator[GatewayThread]:
    """The gateway under uvicorn's own HTTP protocol (no connection hook: the app watches
    `receive()` for a disconnect, as under any ASGI server)."""
    yield from gateway_serve(plain=True)


@pytest.fixture
def upstream() -> Iterator[FakeModelServerThread]:
    """The primary fake model server."""
    with FakeModelServerThread() as fake:
        yield fake


@pytest.fixture
def backup_upstream() -> Iterator[FakeModelServerThread]:
    """A second fake model server (fallback target)."""
    with FakeModelServerThread() as fake:
        yield fake


def compatible_target(url: str, model: str = UPSTREAM_MODEL) -> dict[str, Any]:
    """An OPENAI_COMPATIBLE target on a loopback fake."""
    return {"provider": "OPENAI_COMPATIBLE", "base_url": url, "target_model": model}


@dataclass
class Tenant:
    """A workspace with one endpoint, one group allowed on it and one key of that group."""

    workspace: Workspace
    endpoint: Endpoint
    group: Group
    key: str
    prefix: str


def tenant_build(
    *,
    workspace: Workspace,
    targets: list[dict[str, Any]],
    slug: str = SLUG,
    limits: dict[str, list[dict[str, Any]]] | None = None,
    external_id: str = "cust_42",
    routing: dict[str, Any] | None = None,
) -> Tenant:
    """Create endpoint, group and key through the services."""
    endpoint = endpoint_create(
        workspace=workspace, actor=SYSTEM_ACTOR, slug=slug, targets=targets, routing=routing
    )
    model = {"slug": slug, "rate_limits": [], "usage_limits": [], **(limits or {})}
    group = group_create(
        workspace=workspace, actor=SYSTEM_ACTOR, external_entity_id=external_id, models=[model]
    )
    key, plaintext = api_key_create(workspace=workspace, group=group, actor=SYSTEM_ACTOR)
    return Tenant(workspace, endpoint, group, plaintext, key.prefix)


TOKENS_PER_MINUTE = {"rate_limits": [{"type": "TOKEN", "unit": "MINUTE", "threshold": 1_000_000}]}


@pytest.fixture
def token_limited(
    gateway: GatewayThread, workspace: Workspace, upstream: FakeModelServerThread
) -> Tenant:
    """`acme/llama` on the primary fake under a TOKEN limit: admission caps what the upstream
    may produce (and, the breakers once known, drafts the upstream call while it waits)."""
    return tenant_build(
        workspace=workspace, targets=[compatible_target(upstream.url)], limits=TOKENS_PER_MINUTE
    )


@pytest.fixture
def tenant(gateway: GatewayThread, workspace: Workspace, upstream: FakeModelServerThread) -> Tenant:
    """`acme/llama` routed to the primary fake, with a key allowed on it."""
    return tenant_build(workspace=workspace, targets=[compatible_target(upstream.url)])


class StaticUpstream:
    """A loopback HTTP server answering every request with one fixed status and body."""

    def __init__(
        self,
        status: int,
        body: bytes,
        content_type: str = "application/json",
        stall: float = 0,
        head_delay: float = 0,
    ) -> None:
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        self.hits = 0  # requests received
        upstream = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's naming
                self.rfile.read(int(self.headers.get("Content-Length", 0)))
                upstream.hits += 1
                if head_delay:  # nothing at all for a while: a model server still working
                    time.sleep(head_delay)
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                if stall:  # the head goes out at once, then nothing: a hung model server
                    self.send_header("Transfer-Encoding", "chunked")
                    self.end_headers()
                    self.wfile.flush()
                    time.sleep(stall)
                    return
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        """OpenAI base URL (…/v1)."""
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"

    def stop(self) -> None:
        """Stop serving."""
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def unavailable_upstream() -> Iterator[StaticUpstream]:
    """An upstream that answers 503 with an OpenAI-style JSON error."""
    server = StaticUpstream(503, b'{"error": {"message": "overloaded", "type": "server_error"}}')
    yield server
    server.stop()


def gateway_serve(*, plain: bool = False) -> Iterator[GatewayThread]:
    """The gateway as a real server, its key cache and circuits emptied first (for a fixture to
    yield from, after pointing the settings at what the test puts in between, such as a relay)."""
    authcache.cache_reset()
    circuit_reset()
    server = GatewayThread(plain=plain).start()
    yield server
    server.stop()
