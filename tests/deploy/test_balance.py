"""A node's workers share its connections evenly, even when they all arrive at once (a pool of
keep-alive clients starting together), and keep doing so across a worker restart."""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest
from django.conf import settings

from gateway_project.cli import serve_argv
from tests.faults.processes import Gateway
from tests.waiting import wait_until

pytestmark = pytest.mark.slow
CONNECTIONS = 16
# Each worker holds at least this many of the CONNECTIONS (an even split is 8 and 8).
FAIR = 6
ROUNDS = 3
REQUEST = b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n"


class Node(Gateway):
    """`gateway serve --workers 2` on a free port."""

    def command(self) -> tuple[list[str], dict[str, str]]:
        """The command line of `gateway serve`."""
        return serve_argv(workers=2, bind=f"127.0.0.1:{self.port}"), self.env


@pytest.fixture
def node(tmp_path: Path) -> Iterator[Node]:
    env = {
        **os.environ,
        "DATABASE_URL": f"sqlite:///{tmp_path / 'gateway.sqlite3'}",
        "REDIS_URL": settings.REDIS_URL,
        "GATEWAY_LOG_LEVEL": "WARNING",
    }
    gateway = Node(env, tmp_path, "node").start()
    try:
        yield gateway
    finally:
        gateway.stop()


async def _request(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bytes:
    writer.write(REQUEST)
    head = await reader.readuntil(b"\r\n\r\n")
    length = next(
        int(line.split(b":")[1])
        for line in head.split(b"\r\n")
        if line.lower().startswith(b"content-length:")
    )
    await reader.readexactly(length)
    return head.split(b" ")[1]


async def _held_per_worker(node: Node) -> dict[int, int]:
    """Open CONNECTIONS keep-alive connections at once, three requests on each; while they are
    open, how many each worker holds."""
    pairs = await asyncio.gather(
        *(asyncio.open_connection("127.0.0.1", node.port) for _ in range(CONNECTIONS))
    )
    try:
        for _ in range(3):
            statuses = await asyncio.gather(*(_request(*pair) for pair in pairs))
            assert statuses == [b"200"] * CONNECTIONS
        return {worker.pid: node.streams_held(worker) for worker in node.workers()}
    finally:
        for _, writer in pairs:
            writer.close()


def _closed(node: Node) -> bool:
    return sum(node.streams_held(worker) for worker in node.workers()) == 0


def _rounds(node: Node) -> list[dict[int, int]]:
    held = []
    for _ in range(ROUNDS):
        held.append(asyncio.run(_held_per_worker(node)))
        wait_until(lambda: _closed(node), timeout=10, what="the connections of a round closed")
    return held


def _fair(held: dict[int, int]) -> bool:
    return sum(held.values()) == CONNECTIONS and min(held.values()) >= FAIR and len(held) == 2


def test_connections_opened_at_once_are_shared_evenly_by_the_workers(node):
    held = _rounds(node)

    assert all(_fair(round_) for round_ in held), held


def _live(node: Node) -> set[int]:
    return {w.pid for w in node.workers() if w.status() != psutil.STATUS_ZOMBIE}


def test_a_worker_replacing_a_killed_one_takes_its_share(node):
    first = _live(node)
    victim = min(first)
    os.kill(victim, signal.SIGKILL)
    wait_until(lambda: len(_live(node) - {victim}) == 2, timeout=30, what="a new worker")
    (new,) = _live(node) - first
    node.wait_accepting(new)

    held = _rounds(node)

    assert all(_fair(round_) for round_ in held), held
    assert all(new in round_ for round_ in held), held
