"""The control plane's ASGI handler: one hop a request, Django's request signals kept, the lean
middleware chain only for cookie-less management calls."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import pytest
from django.core.signals import request_finished, request_started
from django.db import connection
from django.db.backends.signals import connection_created
from django.http import HttpRequest, StreamingHttpResponse
from django.test import RequestFactory
from django.urls import path

from gateway_project.control_handler import ControlPlaneHandler, is_cookieless_management
from groups.models import Workspace
from tests.api.conftest import management_key, root_group_make
from tests.waiting import wait_until

pytestmark = pytest.mark.django_db(transaction=True)  # the handler's threads see committed rows

Events = list[tuple[str, str]]


def _stream(request: HttpRequest) -> StreamingHttpResponse:
    async def chunks() -> AsyncIterator[bytes]:
        for chunk in (b"one,", b"two,", b"three"):
            yield chunk

    return StreamingHttpResponse(chunks())


urlpatterns = [path("stream", _stream)]


def _scope(path: str, *, method: str = "GET", headers: dict[str, str] | None = None) -> dict:
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [(b"host", b"testserver")]
        + [(name.lower().encode(), value.encode()) for name, value in (headers or {}).items()],
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 8000),
    }


def _serve(handler: ControlPlaneHandler, scope: dict, events: Events | None = None) -> list[dict]:
    """The messages `handler` sends for one request (with no body); the client never leaves."""
    sent: list[dict[str, Any]] = []
    requests = [{"type": "http.request", "body": b"", "more_body": False}]

    async def receive() -> dict[str, Any]:
        if requests:
            return requests.pop()
        await asyncio.Event().wait()
        raise AssertionError("unreachable")

    async def send(message: Any) -> None:
        sent.append(dict(message))
        if events is not None and message["type"] == "http.response.body":
            events.append(("sent", bytes(message.get("body", b"")).decode()))

    asyncio.run(handler(scope, receive, send))
    return sent


def _status(sent: list[dict]) -> int:
    return int(sent[0]["status"])


def _headers(sent: list[dict]) -> dict[str, str]:
    return {name.decode().lower(): value.decode() for name, value in sent[0]["headers"]}


@pytest.fixture
def handler() -> ControlPlaneHandler:
    return ControlPlaneHandler()


@pytest.fixture
def events() -> Iterator[Events]:
    """request_started, connections opened and request_finished, each with its thread's name."""
    seen: Events = []

    def record(name: str):
        def receiver(**kwargs: Any) -> None:
            seen.append((name, threading.current_thread().name))

        return receiver

    receivers = [
        (request_started, record("started")),
        (connection_created, record("connected")),
        (request_finished, record("finished")),
    ]
    for signal, receiver in receivers:
        signal.connect(receiver)
    yield seen
    for signal, receiver in receivers:
        signal.disconnect(receiver)


@pytest.fixture
def group_call(workspace: Workspace) -> dict:
    """The scope of a GET of a group with a MANAGE key of its workspace."""
    group = root_group_make(workspace, "acme/llama", external_id="cust_1")
    key = management_key(workspace)
    connection.close()  # the test's own connection back to the pool
    return _scope(f"/v1/gateway/groups/{group.id}", headers={"Authorization": f"Bearer {key}"})


def test_a_management_call_runs_its_signals_and_view_on_one_request_thread(
    handler, group_call, events
):
    sent = _serve(handler, group_call)

    assert _status(sent) == 200
    assert [name for name, _thread in events] == ["started", "connected", "finished"]
    threads = {thread for _name, thread in events}
    assert len(threads) == 1
    assert threads.pop().startswith("django-")


@pytest.mark.skipif(connection.vendor != "postgresql", reason="the pool is PostgreSQL's")
def test_a_management_call_returns_its_database_connection_to_the_pool(handler, group_call):
    pool = connection.pool  # type: ignore[attr-defined]  # PostgreSQL's, when pooled

    for _ in range(3):
        assert _status(_serve(handler, group_call)) == 200

    def lent() -> int:
        stats = pool.get_stats()
        return int(stats["pool_size"] - stats["pool_available"])

    wait_until(lambda: lent() == 0, what="every pooled connection back in the pool")


def test_a_complete_response_is_closed_before_it_is_sent(handler, group_call, events):
    sent = _serve(handler, group_call, events)

    assert [name for name, _thread in events][-2:] == ["finished", "sent"]
    assert sent[-1].get("more_body", False) is False


def test_a_streaming_response_streams_and_closes_after_its_last_chunk(handler, events, settings):
    settings.ROOT_URLCONF = __name__

    sent = _serve(handler, _scope("/stream"), events)

    assert _status(sent) == 200
    chunks = [name if name != "sent" else f"sent {body}" for name, body in events]
    assert chunks == ["started", "sent one,", "sent two,", "sent three", "sent ", "finished"]


def test_the_admin_behind_the_handler_still_refuses_a_post_without_a_csrf_token(handler):
    sent = _serve(handler, _scope("/admin/login/", method="POST"))

    assert _status(sent) == 403


def test_the_admin_behind_the_handler_still_sets_the_csrf_cookie_and_asks_for_a_login(handler):
    login = _serve(handler, _scope("/admin/login/"))
    index = _serve(handler, _scope("/admin/"))

    assert _status(login) == 200
    assert any(
        name == b"Set-Cookie" and value.startswith(b"csrftoken=")
        for name, value in login[0]["headers"]
    )
    assert _status(index) == 302
    assert _headers(index)["location"].startswith("/admin/login/")


@pytest.mark.parametrize(
    ("path", "headers", "lean"),
    [
        ("/v1/gateway/groups", {}, True),
        ("/v1/gateway", {}, True),
        ("/v1/gateway/groups", {"Cookie": "sessionid=abc"}, False),
        ("/v1/gatewayx", {}, False),
        ("/admin/", {}, False),
        ("/healthz", {}, False),
    ],
)
def test_only_a_cookie_less_management_call_takes_the_lean_chain(path, headers, lean):
    request = RequestFactory().get(path, headers=headers)

    assert is_cookieless_management(request) is lean


def test_the_lean_chain_leaves_out_only_what_cookies_use(handler):
    lean = [type(hook.__self__).__name__ for hook in handler.management_chain._view_middleware]
    full = [type(hook.__self__).__name__ for hook in handler.full_chain._view_middleware]

    assert "CsrfViewMiddleware" in full
    assert "CsrfViewMiddleware" not in lean


@pytest.fixture
def calls(workspace: Workspace) -> list[Callable[[], HttpRequest]]:
    """Management calls of every outcome, each built anew on demand (one per chain)."""
    group = root_group_make(workspace, "acme/llama", external_id="cust_1")
    auth = {"Authorization": f"Bearer {management_key(workspace)}"}
    factory = RequestFactory()
    unknown = "/v1/gateway/groups/grp_00000000000000000000000000"
    json = "application/json"
    return [
        lambda: factory.get(f"/v1/gateway/groups/{group.id}", headers=auth),
        lambda: factory.get("/v1/gateway/groups", {"external_entity_id": "cust_1"}, headers=auth),
        lambda: factory.get(f"/v1/gateway/groups/{group.id}"),
        lambda: factory.get(unknown, headers=auth),
        lambda: factory.get("/v1/gateway/nowhere", headers=auth),
        lambda: factory.post("/v1/gateway/groups", b"{", content_type=json, headers=auth),
        lambda: factory.post("/v1/gateway/groups", {"metadata": 1}, json, headers=auth),
        lambda: factory.put("/v1/gateway/groups", b"{}", content_type=json, headers=auth),
        lambda: factory.get("/v1/gateway/docs"),
    ]


def test_the_lean_chain_answers_management_calls_byte_for_byte_as_the_full_one(handler, calls):
    for call in calls:
        lean = handler.management_chain.get_response(call())
        full = handler.full_chain.get_response(call())

        assert lean.status_code == full.status_code, call().path
        assert _without_request_id(lean) == _without_request_id(full), call().path
        assert lean.cookies.output() == full.cookies.output() == "", call().path
        assert lean.content == full.content, call().path


def _without_request_id(response: Any) -> list[tuple[str, str]]:
    return [(name, value) for name, value in response.items() if name != "X-Request-ID"]
