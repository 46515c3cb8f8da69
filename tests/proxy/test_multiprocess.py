"""The gateway under gunicorn with two uvicorn workers (file DB, shared Redis)."""

from __future__ import annotations

import asyncio
import http.client
import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import httpx
import psutil
import pytest
from django.conf import settings

from tests.fakes.model_server import FakeModelServerThread
from tests.metrics_read import requests_by_worker, sample_sum
from tests.waiting import wait_until

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[2]
BODY = {"model": "acme/llama", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _env(tmp_path: Path) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        DATABASE_URL=f"sqlite:///{tmp_path / 'gateway.sqlite3'}",
        REDIS_URL=settings.REDIS_URL,
        GATEWAY_UPSTREAM_ALLOWLIST="127.0.0.0/8",
        SECRET_KEY=settings.SECRET_KEY,
        GATEWAY_KEY_PEPPER=settings.GATEWAY_KEY_PEPPER,
        GATEWAY_ENCRYPTION_KEY=settings.GATEWAY_ENCRYPTION_KEY,
        GATEWAY_LOG_LEVEL="WARNING",
        PROMETHEUS_MULTIPROC_DIR=str(tmp_path / "metrics"),
    )
    return env


def _seed(env: dict[str, str], *args: str) -> dict[str, str]:
    out = subprocess.run(
        [sys.executable, "-m", "tests.proxy.seed", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def cluster(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[str, dict[str, str], psutil.Process]]:
    """(gateway URL, seeded credentials, gunicorn master) with 2 workers over a fake upstream,
    shared by the tests of this module: none changes what the others rely on."""
    yield from _gateway(tmp_path_factory.mktemp("cluster"), workers=2)


@pytest.fixture
def limited_cluster(tmp_path: Path) -> Iterator[tuple[str, dict[str, str], psutil.Process]]:
    """The same with 4 workers and a REQUEST/MINUTE limit of 100 on the key's group."""
    yield from _gateway(tmp_path, workers=4, requests_per_minute=100)


def _gateway(
    tmp_path: Path, *, workers: int, requests_per_minute: int | None = None
) -> Iterator[tuple[str, dict[str, str], psutil.Process]]:
    with FakeModelServerThread(record=False) as upstream:
        env = _env(tmp_path)
        limit = [str(requests_per_minute)] if requests_per_minute else []
        seeded = _seed(env, "create", upstream.url, *limit)
        port = _free_port()
        command = [
            str(Path(sys.executable).parent / "gunicorn"),
            "-k",
            "gateway_project.worker.GatewayWorker",
            "-c",
            "python:gateway_project.gunicorn_conf",
            "-w",
            str(workers),
            "-b",
            f"127.0.0.1:{port}",
            "gateway_project.asgi:application",
        ]
        master = subprocess.Popen(command, cwd=ROOT, env=env)
        url = f"http://127.0.0.1:{port}"
        try:
            wait_until(lambda: _healthy(url), timeout=30, interval=0.1)
            yield url, seeded, psutil.Process(master.pid)
        finally:
            master.terminate()
            master.wait(timeout=30)


def _healthy(url: str) -> bool:
    try:
        return httpx.get(f"{url}/healthz", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


def _fresh_post(url: str, key: str) -> int:
    """POST on a new connection (gunicorn spreads connections over its workers)."""
    host, port = url.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=5)
    try:
        headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
        conn.request("POST", "/v1/chat/completions", body=json.dumps(BODY), headers=headers)
        return conn.getresponse().status
    finally:
        conn.close()


def _answered(master: psutil.Process, status: str) -> dict[int, float]:
    """How many requests with `status` each worker has counted (in its metric files)."""
    return requests_by_worker(Path(master.environ()["PROMETHEUS_MULTIPROC_DIR"]), status=status)


def _both_workers_answered(
    master: psutil.Process, status: str, since: dict[int, float] | None = None
) -> bool:
    """Both live workers have counted a request with `status`, one more than `since` counted."""
    counts, before = _answered(master, status), since or {}
    live = {child.pid for child in master.children()}
    return len(live) == 2 and all(counts.get(pid, 0) > before.get(pid, 0) for pid in live)


def test_revoked_key_is_rejected_on_every_worker_within_a_second(cluster):
    url, tenant, master = cluster
    seeded = _seed(_env_of(cluster), "key", tenant["workspace_id"])  # this test's own key
    ok_before, denied_before = _answered(master, "200"), _answered(master, "401")
    wait_until(
        lambda: (
            [_fresh_post(url, seeded["key"]) for _ in range(4)]
            and _both_workers_answered(master, "200", since=ok_before)
        ),
        timeout=20,
        interval=0,
    )

    _seed(_env_of(cluster), "revoke", seeded["workspace_id"], seeded["prefix"])
    revoked_at = time.monotonic()
    results = []
    while time.monotonic() < revoked_at + 1.5:
        results.append((time.monotonic() - revoked_at, _fresh_post(url, seeded["key"])))

    late = [status for elapsed, status in results if elapsed >= 1.0]
    first_401 = next((elapsed for elapsed, status in results if status == 401), None)
    print(f"revocation: first 401 after {first_401:.3f}s, {len(results)} requests in 1.5 s")
    assert len(late) >= 5 and set(late) == {401}
    wait_until(lambda: _both_workers_answered(master, "401", since=denied_before), timeout=5)


def test_metrics_sum_every_worker_of_the_node(cluster):
    url, seeded, master = cluster
    wait_until(
        lambda: (
            [_fresh_post(url, seeded["key"]) for _ in range(4)]
            and _both_workers_answered(master, "200")
        ),
        timeout=20,
        interval=0,
    )
    files = Path(master.environ()["PROMETHEUS_MULTIPROC_DIR"])
    ok = {"status": "200", "slug": "acme/llama"}

    def scraped_and_written() -> tuple[float, float]:
        text = httpx.get(f"{url}/metrics", timeout=5).text
        return sample_sum(text, "gateway_requests_total", **ok), sum(
            requests_by_worker(files, **ok).values()
        )

    # Each worker writes its numbers out within a second: then the scrape is their sum.
    wait_until(lambda: len(set(scraped_and_written())) == 1, timeout=10)
    served, written = scraped_and_written()

    assert served == written >= 2


def _env_of(cluster) -> dict[str, str]:
    url, seeded, master = cluster
    return master.environ()


def test_two_hundred_concurrent_streams_keep_memory_flat(cluster):
    url, seeded, master = cluster
    stream_body = {**BODY, "stream": True, "max_tokens": 20, "fake": {"delay_ms": 20}}

    async def one(session: aiohttp.ClientSession) -> int:
        headers = {"Authorization": f"Bearer {seeded['key']}"}
        async with session.post(
            f"{url}/v1/chat/completions", json=stream_body, headers=headers
        ) as r:
            chunks = 0
            async for _ in r.content.iter_any():
                chunks += 1
            return r.status

    async def round_of(n: int) -> list[int]:
        connector = aiohttp.TCPConnector(limit=0)
        async with aiohttp.ClientSession(connector=connector) as session:
            return await asyncio.gather(*(one(session) for _ in range(n)))

    def rss() -> int:
        return sum(child.memory_info().rss for child in master.children())

    assert asyncio.run(round_of(200)) == [200] * 200  # warm-up: pools, caches, buffers
    warm = rss()
    for _ in range(3):
        assert asyncio.run(round_of(200)) == [200] * 200
    after = rss()

    print(
        f"200 streams x4 rounds: RSS after warm-up {warm >> 20} MiB, after 3 more {after >> 20} MiB"
    )
    assert after - warm < 16 * 1024 * 1024, (warm, after)


def test_four_workers_and_two_hundred_clients_admit_exactly_a_minute_limit_of_100(limited_cluster):
    url, seeded, master = limited_cluster
    wait_until(lambda: len(master.children()) == 4, timeout=30, what="four workers")
    headers = {"Authorization": f"Bearer {seeded['key']}"}

    async def one(session: aiohttp.ClientSession, go: asyncio.Event) -> tuple[int, dict, float]:
        await go.wait()
        async with session.post(f"{url}/v1/chat/completions", json=BODY, headers=headers) as r:
            return r.status, await r.json(), time.monotonic()

    async def crowd() -> tuple[list[tuple[int, dict, float]], float]:
        # One connection per client (gunicorn spreads connections over its workers).
        connector = aiohttp.TCPConnector(limit=0, force_close=True)
        async with aiohttp.ClientSession(connector=connector) as session:
            go = asyncio.Event()
            tasks = [asyncio.create_task(one(session, go)) for _ in range(200)]
            await asyncio.sleep(0)  # every client is waiting at the gate
            started = time.monotonic()
            go.set()
            return list(await asyncio.gather(*tasks)), started

    results, started = asyncio.run(crowd())

    admitted = [r for r in results if r[0] == 200]
    rejected = [r for r in results if r[0] != 200]
    last_admit = max(at for _, _, at in admitted) - started
    # GCRA refills one request every 0.6 s: exactly 100 while the crowd is served within that.
    refills = int(last_admit / 0.6)
    print(
        f"\n4 workers, 200 concurrent clients, REQUEST/MINUTE 100: {len(admitted)} admitted,"
        f" {len(rejected)} rejected, last admission {last_admit:.2f}s after the start"
    )
    assert 100 <= len(admitted) <= 100 + refills
    assert {status for status, _, _ in rejected} == {429}
    assert {body["error"]["code"] for _, body, _ in rejected} == {"rate_limit_exceeded"}
