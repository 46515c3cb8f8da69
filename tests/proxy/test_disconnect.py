"""A client that leaves ends its request: through the gateway worker's connection hook, or by
watching `receive()` under any other ASGI server."""

from __future__ import annotations

import asyncio
import json
import logging
import socket
import time
from urllib.parse import urlsplit

import pytest

from gateway_project.kernel.connection_hook import DisconnectHook
from routing.client_connection import DisconnectWatch
from tests.proxy.conftest import SLUG
from tests.waiting import wait_until


async def _never() -> dict[str, str]:
    await asyncio.Event().wait()
    return {}


async def _watched(hook: DisconnectHook, *, lose_after: float | None, disarm: bool) -> str:
    """Run a request-like task under a watch on `hook`: 'cancelled' if the watch ended it."""

    async def request() -> str:
        watch = DisconnectWatch(_never, hook)
        if disarm:
            watch.disarm()
        try:
            await asyncio.sleep(0.2)
        except asyncio.CancelledError:
            assert watch.absorb()
            return "cancelled"
        return "finished"

    task = asyncio.ensure_future(request())
    if lose_after is not None:
        await asyncio.sleep(lose_after)
        hook.fire()
    return await task


def test_a_connection_lost_while_watched_cancels_the_request():
    assert asyncio.run(_watched(DisconnectHook(), lose_after=0.01, disarm=False)) == "cancelled"


def test_a_connection_lost_before_the_watch_cancels_the_request_at_once():
    hook = DisconnectHook()
    hook.fire()
    assert asyncio.run(_watched(hook, lose_after=None, disarm=False)) == "cancelled"


def test_a_disarmed_watch_lets_the_request_finish_and_leaves_no_callback():
    hook = DisconnectHook()
    assert asyncio.run(_watched(hook, lose_after=0.01, disarm=True)) == "finished"
    assert hook.callback is None and hook.lost


def _leave_midway(url: str, key: str) -> None:
    """Send a JSON completion whose upstream answers after 2 s, and close after 0.3 s."""
    body = json.dumps(
        {
            "model": SLUG,
            "messages": [{"role": "user", "content": "hi"}],
            "fake": {"first_byte_delay_ms": 2000},
        }
    ).encode()
    parts = urlsplit(url)
    head = (
        f"POST /v1/chat/completions HTTP/1.1\r\nHost: {parts.netloc}\r\n"
        f"Authorization: Bearer {key}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode()
    with socket.create_connection((parts.hostname, parts.port or 80)) as sock:
        sock.sendall(head + body)
        time.sleep(0.3)


@pytest.mark.parametrize("server", ["gateway", "gateway_plain"])
def test_a_client_leaving_a_json_request_ends_it_before_the_upstream_answers(
    server, request, tenant, upstream, caplog
):
    gateway = request.getfixturevalue(server)
    caplog.set_level(logging.INFO, logger="gateway.request")
    left = time.monotonic()

    _leave_midway(gateway.url, tenant.key)

    def ended() -> list[logging.LogRecord]:
        return [r for r in caplog.records if r.name == "gateway.request"]

    wait_until(lambda: ended(), timeout=5)
    # Ended by the client leaving (499), well before the upstream's answer at 2 s.
    assert time.monotonic() - left < 1.5
    (record,) = ended()
    assert record.status == 499  # type: ignore[attr-defined]
