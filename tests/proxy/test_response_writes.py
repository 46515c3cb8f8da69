"""The gateway worker's HTTP protocol writes a response head together with its first body bytes,
never holds it past the loop step it was written in, and never holds a `100 Continue`."""

from __future__ import annotations

import asyncio
import gc
from collections.abc import Awaitable, Callable
from typing import Any

import uvicorn
from uvicorn.server import ServerState

from gateway_project.worker import COALESCE_MAX_BODY, BoundedHeadProtocol

App = Callable[[dict[str, Any], Any, Any], Awaitable[None]]
REQUEST = b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{}"


class RecordingTransport(asyncio.Transport):
    """The socket side of one connection: every write kept as it was made."""

    def __init__(self) -> None:
        super().__init__()
        self.writes: list[bytes] = []
        self.closed = False

    def write(self, data: bytes | bytearray | memoryview) -> None:
        assert not self.closed, "written after close"
        self.writes.append(bytes(data))

    def writelines(self, list_of_data: Any) -> None:
        self.write(b"".join(list_of_data))

    def close(self) -> None:
        self.closed = True

    def is_closing(self) -> bool:
        return self.closed

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"sockname": ("127.0.0.1", 8000), "peername": ("127.0.0.1", 50000)}.get(
            name, default
        )

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


def _serve(
    app: App, request: bytes = REQUEST, transport: RecordingTransport | None = None
) -> list[bytes]:
    """The writes the worker's protocol makes answering `request` with `app`."""
    transport = transport or RecordingTransport()

    async def run() -> list[bytes]:
        config = uvicorn.Config(app, lifespan="off", log_level="warning")
        state = ServerState()
        protocol = BoundedHeadProtocol(
            config=config, server_state=state, app_state={}, _loop=asyncio.get_running_loop()
        )
        protocol.connection_made(transport)
        protocol.data_received(request)
        while state.tasks:
            await asyncio.gather(*state.tasks)
        await asyncio.sleep(0)  # any write left for the end of the loop step
        return transport.writes

    return asyncio.run(run())


def _start(status: int = 200, headers: list[tuple[bytes, bytes]] | None = None) -> dict[str, Any]:
    return {"type": "http.response.start", "status": status, "headers": headers or []}


def _body(data: bytes, *, more: bool = False) -> dict[str, Any]:
    return {"type": "http.response.body", "body": data, "more_body": more}


async def _read_all(receive: Any) -> None:
    message = await receive()
    while message.get("more_body"):
        message = await receive()


def test_a_whole_answer_is_one_write():
    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        await _read_all(receive)
        await send(_start(headers=[(b"content-length", b"11")]))
        await send(_body(b'{"ok": true}'[:11]))

    writes = _serve(app)

    assert len(writes) == 1
    assert writes[0].startswith(b"HTTP/1.1 200 OK\r\n")
    assert writes[0].endswith(b"\r\n\r\n" + b'{"ok": true}'[:11])


def test_a_stream_head_goes_with_its_first_event_and_each_event_after_it_alone():
    events = [b"data: 1\n\n", b"data: 2\n\n", b"data: 3\n\n"]

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        await _read_all(receive)
        await send(_start(headers=[(b"content-type", b"text/event-stream")]))
        for event in events:
            await send(_body(event, more=True))
        await send(_body(b""))

    writes = _serve(app)

    assert len(writes) == 4
    assert writes[0].startswith(b"HTTP/1.1 200 OK\r\n")
    assert writes[0].endswith(b"\r\n\r\n9\r\ndata: 1\n\n\r\n")
    assert writes[1:] == [b"9\r\ndata: 2\n\n\r\n", b"9\r\ndata: 3\n\n\r\n", b"0\r\n\r\n"]


def test_a_head_whose_body_is_not_ready_goes_out_in_the_same_loop_step():
    transport = RecordingTransport()
    seen: list[int] = []

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        await _read_all(receive)
        await send(_start(headers=[(b"content-type", b"text/event-stream")]))
        await asyncio.sleep(0.05)  # an upstream still thinking
        seen.append(len(transport.writes))
        await send(_body(b"data: late\n\n"))

    writes = _serve(app, transport=transport)

    assert seen == [1]  # the head alone, before the body existed
    assert writes[0].startswith(b"HTTP/1.1 200 OK\r\n") and writes[0].endswith(b"\r\n\r\n")
    assert writes[1] == b"c\r\ndata: late\n\n\r\n0\r\n\r\n"


def test_a_head_is_written_before_the_connection_closes():
    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        await _read_all(receive)
        await send(_start(headers=[(b"content-length", b"5")]))
        # Returns without the body: the server closes the connection after what was written.

    request = REQUEST.replace(b"Host: x\r\n", b"Host: x\r\nConnection: close\r\n")
    writes = _serve(app, request)

    assert len(writes) == 1 and writes[0].startswith(b"HTTP/1.1 200 OK\r\n")


def test_a_large_body_follows_its_head_without_being_copied_behind_it():
    data = b"x" * (COALESCE_MAX_BODY + 1)

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        await _read_all(receive)
        await send(_start(headers=[(b"content-length", str(len(data)).encode())]))
        await send(_body(data))

    writes = _serve(app)

    assert len(writes) == 1  # one writelines: head and body in one call
    assert writes[0].endswith(b"\r\n\r\n" + data)


def test_a_100_continue_is_never_held():
    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        await _read_all(receive)
        await send(_start(headers=[(b"content-length", b"2")]))
        await send(_body(b"ok"))

    request = REQUEST.replace(b"Host: x\r\n", b"Host: x\r\nExpect: 100-continue\r\n")
    writes = _serve(app, request)

    assert writes[0] == b"HTTP/1.1 100 Continue\r\n\r\n"
    assert len(writes) == 2 and writes[1].endswith(b"\r\n\r\nok")


def test_an_error_answer_of_the_server_itself_is_whole():
    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        raise RuntimeError("boom")

    writes = _serve(app)

    assert len(writes) == 1
    assert writes[0].startswith(b"HTTP/1.1 500 ") and writes[0].endswith(b"Internal Server Error")


def _garbage_after(requests: int) -> int:
    """Objects the cyclic garbage collector finds after `requests` answered on one connection."""

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        await _read_all(receive)
        await send(_start(headers=[(b"content-length", b"2")]))
        await send(_body(b"{}"))

    gc.collect()
    gc.disable()
    try:
        writes = _serve(app, REQUEST * requests)
        assert b"".join(writes).count(b"HTTP/1.1 200 OK") == requests
        return gc.collect()
    finally:
        gc.enable()


def test_an_answered_request_leaves_nothing_to_the_cyclic_garbage_collector():
    # Reference counting frees each request's cycle, scope and transport as it ends: garbage
    # left in cycles waits for a collection, which walks everything young and stalls the loop.
    # Per request, the least of three measures: another thread of the test process may leave a
    # few objects now and then; a request that keeps its cycle leaves some 16 every time.
    per_request = min((_garbage_after(40) - _garbage_after(1)) / 39 for _ in range(3))
    assert per_request < 1
