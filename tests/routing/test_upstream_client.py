"""The upstream HTTP client's request bodies arrive whole: written in the step that writes the head,
or finished by a task when the socket's buffer fills. (That it keeps no cookie is an attack of
tests/security/test_attack_access.py.)"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Callable, Coroutine
from typing import Any

import pytest
import uvloop
from aiohttp import web

from routing.upstream import _resumed, upstream_close, upstream_open

Runner = Callable[[Coroutine[Any, Any, Any]], Any]


@pytest.fixture(params=["asyncio", "uvloop"])
def run(request: pytest.FixtureRequest) -> Runner:
    return asyncio.run if request.param == "asyncio" else uvloop.run


class Upstream:
    """A loopback server that reads each body slowly enough to fill the client's socket buffer and
    records what it got."""

    def __init__(self) -> None:
        self.seen: list[tuple[int, str]] = []  # length, sha256
        self.runner: web.AppRunner | None = None
        self.url = ""

    async def start(self) -> None:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_post("/v1/chat/completions", self._handle)
        self.runner = web.AppRunner(app)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.url = f"http://127.0.0.1:{port}/v1/chat/completions"

    async def _handle(self, request: web.Request) -> web.Response:
        digest, size = hashlib.sha256(), 0
        while chunk := await request.content.read(65536):
            digest.update(chunk)
            size += len(chunk)
            await asyncio.sleep(0)
        self.seen.append((size, digest.hexdigest()))
        return web.json_response({"ok": True})

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()


async def _post_all(bodies: list[bytes]) -> list[tuple[int, str]]:
    upstream = Upstream()
    await upstream.start()
    try:
        for body in bodies:
            response = await upstream_open(
                url=upstream.url,
                body=body,
                headers={"Content-Type": "application/json"},
                allowlist=("127.0.0.0/8",),
                timeout=30,
            )
            assert response.status == 200
            await response.read()
            response.release()
    finally:
        await upstream_close()
        await upstream.stop()
    return upstream.seen


def test_bodies_small_and_larger_than_the_socket_buffer_arrive_whole(run: Runner) -> None:
    bodies = [b'{"a": 1}', b'{"p": "%b"}' % (b"x" * 70_000), b'{"p": "%b"}' % (b"y" * 12_000_000)]

    seen = run(_post_all(bodies))

    assert seen == [(len(body), hashlib.sha256(body).hexdigest()) for body in bodies]


async def _resumed_case(outcome: str) -> Any:
    loop = asyncio.get_running_loop()
    gate: asyncio.Future[int] = loop.create_future()
    reached: list[str] = []

    async def body() -> int:
        reached.append("started")
        try:
            value = await gate
        except asyncio.CancelledError:
            reached.append("cancelled")
            raise
        reached.append("resumed")
        return value + 1

    coro = body()
    waiting = coro.send(None)  # its first step, run at once: it now waits on `gate`
    assert reached == ["started"]
    task = asyncio.Task(_resumed(coro, waiting))
    await asyncio.sleep(0)
    if outcome == "result":
        gate.set_result(41)
    elif outcome == "error":
        gate.set_exception(ValueError("boom"))
    else:
        task.cancel()
    try:
        return await task, reached
    except (ValueError, asyncio.CancelledError) as exc:
        return type(exc).__name__, reached


@pytest.mark.parametrize(
    ("outcome", "expected"),
    [
        ("result", (42, ["started", "resumed"])),
        ("error", ("ValueError", ["started"])),
        ("cancel", ("CancelledError", ["started", "cancelled"])),
    ],
)
def test_a_body_write_that_must_wait_is_finished_by_a_task_as_if_it_had_started_there(
    run: Runner, outcome: str, expected: Any
) -> None:
    assert run(_resumed_case(outcome)) == expected
