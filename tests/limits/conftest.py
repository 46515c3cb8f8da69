"""Fixtures of the limits suite: a loopback Redis Cluster and the backend parameter."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from pytest_django.fixtures import Settings

from routing import redis_pool
from tests.limits.support import (
    port_is_free,
    redis_server_start,
    redis_server_stop,
    sync_client,
    wait_until,
)
from tests.proxy.conftest import gateway  # noqa: F401 - fixtures reused from the proxy suite

CLUSTER_PORTS = (7110, 7111, 7112)
SLOTS = 16384


@pytest.fixture(scope="session")
def redis_cluster() -> Iterator[str]:
    """A 3-primary Redis Cluster on loopback ports 7110-7112; yields its `redis+cluster://` URL."""
    if not all(port_is_free(port) for port in CLUSTER_PORTS):
        pytest.skip(f"ports {CLUSTER_PORTS} are in use")
    directory = Path(tempfile.mkdtemp(prefix="gw-limits-cluster-"))
    processes = [
        redis_server_start(port=p, directory=directory, cluster=True) for p in CLUSTER_PORTS
    ]
    try:
        _cluster_form(CLUSTER_PORTS)
        yield f"{redis_pool.CLUSTER_SCHEME}127.0.0.1:{CLUSTER_PORTS[0]}"
    finally:
        for process in processes:
            redis_server_stop(process)
        shutil.rmtree(directory, ignore_errors=True)


def _cluster_form(ports: tuple[int, ...]) -> None:
    nodes = [redis.Redis(port=port) for port in ports]
    share = SLOTS // len(nodes)
    for index, node in enumerate(nodes):
        last = SLOTS - 1 if index == len(nodes) - 1 else (index + 1) * share - 1
        node.execute_command("CLUSTER ADDSLOTS", *range(index * share, last + 1))
    for port in ports[1:]:
        nodes[0].execute_command("CLUSTER MEET", "127.0.0.1", port)
    wait_until(lambda: all(_cluster_ready(node, len(nodes)) for node in nodes), timeout=30)
    for node in nodes:
        node.close()


def _cluster_ready(node: redis.Redis, size: int) -> bool:
    info = node.cluster("INFO")
    return info["cluster_state"] == "ok" and int(info["cluster_known_nodes"]) == size


@pytest.fixture(params=["single", pytest.param("cluster", marks=pytest.mark.slow)])
def limits_backend(request: pytest.FixtureRequest, settings: Settings) -> str:
    """Runs a test against the single test Redis, then against the loopback Redis Cluster."""
    if request.param == "cluster":
        url = request.getfixturevalue("redis_cluster")
        settings.GATEWAY_LIMITS_REDIS_URL = url
        client = sync_client()
        client.flushall(target_nodes=redis.RedisCluster.PRIMARIES)
        client.close()
    return request.param
