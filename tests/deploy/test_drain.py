"""SIGTERM on a gateway node: running streams finish (within GATEWAY_SHUTDOWN_TIMEOUT), new
requests and readiness get 503 meanwhile, liveness stays up."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from django.conf import settings

from tests.deploy.manifests import ROOT
from tests.fakes.model_server import FakeModelServerThread
from tests.faults.processes import free_port, group_kill, log_tail
from tests.waiting import wait_until

pytestmark = pytest.mark.slow
BODY = {"model": "acme/llama", "messages": [{"role": "user", "content": "hi"}], "stream": True}


class Node:
    """`gateway serve` with one worker over a seeded file database and a fake upstream."""

    def __init__(self, tmp_path: Path, upstream_url: str, shutdown_timeout: float) -> None:
        self.env = {
            **os.environ,
            "DATABASE_URL": f"sqlite:///{tmp_path / 'gateway.sqlite3'}",
            "REDIS_URL": settings.REDIS_URL,
            "GATEWAY_UPSTREAM_ALLOWLIST": "127.0.0.0/8",
            "SECRET_KEY": settings.SECRET_KEY,
            "GATEWAY_KEY_PEPPER": settings.GATEWAY_KEY_PEPPER,
            "GATEWAY_ENCRYPTION_KEY": settings.GATEWAY_ENCRYPTION_KEY,
            "GATEWAY_SHUTDOWN_TIMEOUT": str(shutdown_timeout),
            "GATEWAY_LOG_LEVEL": "WARNING",
        }
        seed = [sys.executable, "-m", "tests.proxy.seed", "create", upstream_url]
        out = subprocess.run(seed, cwd=ROOT, env=self.env, capture_output=True, text=True)
        assert out.returncode == 0, out.stderr
        self.key = json.loads(out.stdout.strip().splitlines()[-1])["key"]
        self.port, self.log = free_port(), tmp_path / "node.log"
        serve = ["serve", "--workers", "1", "--bind", f"127.0.0.1:{self.port}"]
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "gateway_project.cli", *serve],
                cwd=ROOT,
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        wait_until(lambda: self.get("/healthz") == 200, timeout=60, what=log_tail(self.log))

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def get(self, path: str) -> int | None:
        try:
            return httpx.get(self.url + path, timeout=2).status_code
        except httpx.HTTPError:
            return None

    def infer(self, fake: dict) -> httpx.Response:
        headers = {"Authorization": f"Bearer {self.key}"}
        return httpx.post(
            f"{self.url}/v1/chat/completions",
            json={**BODY, "fake": fake},
            headers=headers,
            timeout=10,
        )

    def stream(self, fake: dict, started: threading.Event) -> list[str]:
        headers = {"Authorization": f"Bearer {self.key}"}
        lines = []
        try:
            with httpx.stream(
                "POST",
                f"{self.url}/v1/chat/completions",
                headers=headers,
                json={**BODY, "fake": fake},
                timeout=30,
            ) as response:
                for line in response.iter_lines():
                    started.set()
                    lines.append(line)
        except httpx.HTTPError:
            lines.append("<cut>")
        return lines


@pytest.fixture
def upstream() -> Iterator[FakeModelServerThread]:
    with FakeModelServerThread(record=False) as server:
        yield server


def _stream_in_background(node: Node, fake: dict) -> tuple[Future[list[str]], ThreadPoolExecutor]:
    pool = ThreadPoolExecutor(max_workers=1)
    started = threading.Event()
    future = pool.submit(node.stream, fake, started)
    wait_until(started.is_set, timeout=10, what="the stream's first event")
    return future, pool


def test_sigterm_finishes_running_streams_and_refuses_new_requests(tmp_path, upstream):
    node = Node(tmp_path, upstream.url, shutdown_timeout=30)
    stream, pool = _stream_in_background(node, {"tokens": 30, "delay_ms": 100})
    signalled = time.monotonic()

    os.killpg(node.proc.pid, signal.SIGTERM)

    wait_until(lambda: node.get("/readyz") == 503, timeout=5, what="readiness turns false")
    refused = node.infer({"tokens": 2})
    assert refused.status_code == 503
    assert refused.json()["error"]["code"] == "draining"
    assert refused.headers["retry-after"] == "1"
    assert node.get("/healthz") == 200
    lines = stream.result(timeout=30)
    assert "data: [DONE]" in lines, lines[-3:]
    assert sum(line.startswith("data: {") for line in lines) >= 30
    assert node.proc.wait(timeout=20) == 0, log_tail(node.log)
    assert time.monotonic() - signalled < 25  # it left once the stream was done, not at the bound
    pool.shutdown()


def test_a_stream_longer_than_the_shutdown_timeout_is_cut_at_the_bound(tmp_path, upstream):
    node = Node(tmp_path, upstream.url, shutdown_timeout=2)
    stream, pool = _stream_in_background(node, {"tokens": 600, "delay_ms": 50})
    signalled = time.monotonic()

    os.killpg(node.proc.pid, signal.SIGTERM)
    node.proc.wait(timeout=20)
    elapsed = time.monotonic() - signalled

    lines = stream.result(timeout=10)
    assert "data: [DONE]" not in lines
    assert 2 <= elapsed < 10, elapsed
    pool.shutdown()
    group_kill(node.proc)
