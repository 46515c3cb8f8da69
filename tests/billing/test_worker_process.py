"""A real Celery worker and beat, started as `gateway worker` and `gateway beat` start them: their
log lines are JSON with the gateway's keys, and the worker serves the pipeline's metrics."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
from django.conf import settings
from django.db import connection
from django_redis import get_redis_connection

from billing.services.usage import USAGE_STREAM
from gateway_project.cli import beat_argv, worker_argv
from gateway_project.env import BASE_DIR
from gateway_project.kernel.logs import BASE_KEYS, REQUEST_KEYS
from tests.faults.processes import free_port, group_kill, suite_database_url
from tests.metrics_read import sample_sum
from tests.waiting import wait_until

pytestmark = pytest.mark.slow
TOKEN = "worker-metrics-token-" + uuid.uuid4().hex


def _lines(path: Path) -> list[str]:
    return [line for line in path.read_text(errors="replace").splitlines() if line.strip()]


@dataclass
class Processes:
    """A worker (metrics on a port of its own), beat if asked for, on the test database."""

    dir: Path
    env: dict[str, str]
    port: int
    started: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def start(self, *, beat: bool) -> tuple[Path, Path]:
        """Start them; their log files."""
        worker_log, beat_log = self.dir / "worker.log", self.dir / "beat.log"
        name = f"logs-{uuid.uuid4().hex[:8]}@%h"
        quiet = ["--without-gossip", "--without-mingle", "--without-heartbeat"]
        self._spawn(worker_argv(concurrency=1, name=name) + quiet, worker_log)
        if beat:
            self._spawn(beat_argv(schedule=str(self.dir / "beat-schedule")), beat_log)
        return worker_log, beat_log

    def _spawn(self, argv: list[str], log: Path) -> None:
        with log.open("wb") as out:
            self.started.append(
                subprocess.Popen(
                    argv,
                    cwd=BASE_DIR,
                    env=self.env,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            )


@pytest.fixture
def processes(transactional_db: None, tmp_path: Path) -> Iterator[Processes]:
    """Celery processes of the test; stopped afterwards."""
    if connection.vendor != "postgresql":
        pytest.skip("the worker needs the test database to be a server")
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    env.update(
        DJANGO_SETTINGS_MODULE="gateway_project.settings",
        DATABASE_URL=suite_database_url(),
        REDIS_URL=settings.REDIS_URL,
        GATEWAY_WORKER_METRICS_PORT=str(port),
        GATEWAY_METRICS_TOKEN=TOKEN,
        GATEWAY_LOG_LEVEL="INFO",
    )
    running = Processes(dir=tmp_path, env=env, port=port)
    try:
        yield running
    finally:
        for proc in running.started:
            group_kill(proc, signal.SIGTERM)


def _task_line(path: Path, task: str) -> dict[str, object] | None:
    for line in _lines(path):
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if record.get("logger") == "gateway.task" and record.get("route") == task:
            return dict(record)
    return None


def test_worker_and_beat_log_json_lines_with_the_gateways_keys(processes):
    worker_log, beat_log = processes.start(beat=True)

    task = wait_until(
        lambda: _task_line(worker_log, "billing.usage_ingest"), timeout=60, what="a task line"
    )
    wait_until(lambda: "Sending due task" in beat_log.read_text(), timeout=30)

    assert set(REQUEST_KEYS) <= task.keys()
    assert task["status"] == "success"
    for path in (worker_log, beat_log):
        lines = _lines(path)
        assert lines
        for line in lines:
            record = json.loads(line)  # every line, banner and startup included
            assert list(record)[: len(BASE_KEYS)] == list(BASE_KEYS), line


def test_the_worker_serves_the_pipeline_metrics_behind_the_token(processes):
    # No beat: nothing ingests the event, which has waited since 1970.
    redis = get_redis_connection("default")
    redis.delete(USAGE_STREAM)
    redis.xadd(USAGE_STREAM, {"e": b"{}"}, id="1000-0")
    processes.start(beat=False)
    url = f"http://127.0.0.1:{processes.port}/metrics"

    def scrape(**headers: str) -> httpx.Response:
        return httpx.get(url, headers=headers, timeout=5)

    def listening() -> bool:
        try:
            return bool(scrape())
        except httpx.TransportError:
            return False

    wait_until(listening, timeout=60, what="the worker's metrics port")
    anonymous = scrape()
    forwarded = scrape(**{"Authorization": f"Bearer {TOKEN}", "X-Forwarded-For": "203.0.113.9"})
    text = scrape(Authorization=f"Bearer {TOKEN}").text
    redis.delete(USAGE_STREAM)

    assert anonymous.status_code == 401
    assert anonymous.json()["error"]["code"] == "metrics_unauthorized"
    assert forwarded.status_code == 200  # the token is what counts once it is set
    assert sample_sum(text, "gateway_usage_queue_depth") >= 1
    assert sample_sum(text, "gateway_usage_ingest_lag_seconds") > 1_000_000_000
    assert "gateway_webhook_deliveries_total" in text
