"""Two gateway nodes on one Redis and one PostgreSQL: each node's /metrics counts its own requests,
and a worker killed with SIGKILL takes none of its node's counts with it."""

from __future__ import annotations

import asyncio
import json
import signal
import socket
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import psutil
import pytest

from tests.fakes.model_server import FakeModelServerThread
from tests.faults.conftest import DB_NAME, child_env
from tests.faults.processes import (
    Gateway,
    PrivatePostgres,
    PrivateRedis,
    manage,
)
from tests.faults.traffic import burst, chat_body
from tests.metrics_read import requests_by_worker, sample_sum
from tests.waiting import wait_until

pytestmark = pytest.mark.slow


class Node(Gateway):
    """`gateway serve --workers 2` on a free port, its output in <dir>/<name>.log."""

    def command(self) -> tuple[list[str], dict[str, str]]:
        """`gateway serve`, with the metrics directory it picks by default."""
        argv = [sys.executable, "-m", "gateway_project.cli", "serve", "--workers", "2"]
        return [*argv, "--bind", f"127.0.0.1:{self.port}"], self.env

    @property
    def metrics_dir(self) -> Path:
        """The node's default metrics directory: under the var dir, named for host and master."""
        assert self.proc is not None
        node = f"{socket.gethostname()}-{self.proc.pid}"
        return Path(self.env["GATEWAY_VAR_DIR"]) / "prometheus" / node

    def requests(self, slug: str) -> float:
        """gateway_requests_total of `slug` as this node's /metrics reports it."""
        text = httpx.get(f"{self.url}/metrics", timeout=10).text
        return sample_sum(text, "gateway_requests_total", slug=slug)


@pytest.fixture
def two_nodes(
    private_postgres: PrivatePostgres, tmp_path: Path
) -> Iterator[tuple[dict[str, str], Node, Node]]:
    """(tenant, node A, node B): one Redis, one database and one var dir shared by both nodes."""
    redis = PrivateRedis(tmp_path).start()
    env = child_env(
        database_url=private_postgres.url(DB_NAME), redis_url=redis.url, var_dir=tmp_path
    )
    nodes: list[Node] = []
    with FakeModelServerThread(record=False) as upstream:
        try:
            prefix = f"f{uuid.uuid4().hex[:10]}"
            out = manage(env, "-m", "tests.faults.seed", prefix, upstream.url, upstream.url)
            tenant = dict(json.loads(out.strip().splitlines()[-1]))
            nodes += [Node(env, tmp_path, "node-a").start(), Node(env, tmp_path, "node-b").start()]
            yield tenant, nodes[0], nodes[1]
        finally:
            for node in nodes:
                node.stop()
            redis.kill()


def _send(node: Node, tenant: dict[str, str], count: int) -> list[int | None]:
    body = chat_body(slug=tenant["slug"], tokens=2, stream=False)
    outcomes = asyncio.run(burst(base=node.url, key=tenant["key"], bodies=[body] * count))
    return [outcome.status for outcome in outcomes]


def _respawned(node: Node, victim: int, readings: list[float], slug: str) -> bool:
    """Whether a new worker replaced `victim`; each call also reads the node's count of `slug`."""
    readings.append(node.requests(slug))
    pids = {worker.pid for worker in node.workers()}
    return len(pids) == 2 and victim not in pids


def test_each_node_counts_its_own_requests_and_a_killed_worker_keeps_its_counts(two_nodes):
    tenant, node_a, node_b = two_nodes
    slug = tenant["slug"]

    sent_a = _send(node_a, tenant, 60) + _send(node_a, tenant, 40)
    sent_b = _send(node_b, tenant, 50)

    # Workers write their numbers out once a second: wait for what they counted, never more.
    wait_until(
        lambda: (node_a.requests(slug), node_b.requests(slug)) == (100, 50),
        timeout=10,
        what="each node reports its own requests",
    )

    assert sent_a == [200] * 100 and sent_b == [200] * 50

    per_worker = requests_by_worker(node_a.metrics_dir, slug=slug)
    victim = max(per_worker, key=lambda pid: per_worker[pid])
    assert per_worker[victim] > 0 and sum(per_worker.values()) == 100
    readings: list[float] = []

    psutil.Process(victim).send_signal(signal.SIGKILL)
    wait_until(
        lambda: _respawned(node_a, victim, readings, slug),
        timeout=30,
        what="gunicorn replaces the killed worker",
    )
    readings += [node_a.requests(slug) for _ in range(5)]

    assert readings and min(readings) == max(readings) == 100
    assert node_b.requests(slug) == 50
