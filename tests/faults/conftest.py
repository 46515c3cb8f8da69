"""Fault suite fixtures: a private PostgreSQL cluster per session, a whole private stack per test.

Each test gets its own redis-server (append-only, restartable), gunicorn with two uvicorn workers,
a Celery worker and beat (the real periodic ingest and webhook jobs), the fake model server and a
webhook receiver, plus a fresh tenant (workspace, endpoint, group with REQUEST/DAY and TOKEN/DAY
usage limits, federated key, management key, webhook endpoint) created through the services.
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.fakes.model_server import FakeModelServerThread
from tests.faults.ledger import ReceiverThread, SlowReceiver
from tests.faults.processes import (
    PG_BIN,
    Celery,
    Gateway,
    PrivatePostgres,
    PrivateRedis,
    manage,
)

DB_NAME = "gw_faults"
_DROPPED = ("DATABASE_URL", "REDIS_URL", "CELERY_", "GATEWAY_", "DJANGO_SETTINGS_MODULE")


def child_env(*, database_url: str, redis_url: str, var_dir: Path) -> dict[str, str]:
    """The environment of every process of a private stack (nothing points at shared services)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(_DROPPED)}
    env.update(
        DJANGO_SETTINGS_MODULE="gateway_project.settings",
        DATABASE_URL=database_url,
        REDIS_URL=redis_url,
        SECRET_KEY="faults-secret-key-not-for-production",
        GATEWAY_VAR_DIR=str(var_dir),
        GATEWAY_UPSTREAM_ALLOWLIST="127.0.0.0/8",
        GATEWAY_KEY_CACHE_TTL="30",
        GATEWAY_WEBHOOK_FLUSH_SECONDS="0.5",
        GATEWAY_WEBHOOK_TIMEOUT="1.5",
        GATEWAY_LOG_LEVEL="WARNING",
    )
    return env


@pytest.fixture(scope="session")
def private_postgres(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrivatePostgres]:
    """A PostgreSQL 15 cluster of our own on a free port, migrated once."""
    if not (PG_BIN / "initdb").exists():
        pytest.skip(f"PostgreSQL server binaries not found in {PG_BIN}")
    postgres = PrivatePostgres().init()
    try:
        postgres.start()
        postgres.createdb(DB_NAME)
        var_dir = tmp_path_factory.mktemp("faults-migrate")
        env = child_env(
            database_url=postgres.url(DB_NAME), redis_url="redis://127.0.0.1:1/0", var_dir=var_dir
        )
        manage(env, "manage.py", "migrate", "--no-input", "-v", "0")
        yield postgres
    finally:
        postgres.destroy()


@dataclass
class Stack:
    """One test's running stack and tenant."""

    dir: Path
    env: dict[str, str]
    database_url: str
    postgres: PrivatePostgres
    redis: PrivateRedis
    gateway: Gateway
    worker: Celery
    beat: Celery
    upstream: FakeModelServerThread
    receiver: SlowReceiver
    tenant: dict[str, str]

    def pids(self) -> dict[str, list[int]]:
        """The live processes: gateway workers, Celery worker and beat (a crash changes these)."""
        celery = {"celery worker": self.worker.proc, "celery beat": self.beat.proc}
        return {
            "gateway workers": sorted(w.pid for w in self.gateway.workers()),
            **{name: [p.pid] if p and p.poll() is None else [] for name, p in celery.items()},
        }


def _seed(env: dict[str, str], upstream_url: str, webhook_url: str) -> dict[str, str]:
    prefix = f"f{uuid.uuid4().hex[:10]}"
    out = manage(env, "-m", "tests.faults.seed", prefix, upstream_url, webhook_url)
    return dict(json.loads(out.strip().splitlines()[-1]))


@pytest.fixture
def stack(private_postgres: PrivatePostgres, tmp_path: Path) -> Iterator[Stack]:
    """Everything running on private Redis and PostgreSQL; torn down (and PG restarted) after."""
    redis = PrivateRedis(tmp_path).start()
    database_url = private_postgres.url(DB_NAME)
    env = child_env(database_url=database_url, redis_url=redis.url, var_dir=tmp_path)
    started: list[Gateway | Celery] = []
    with FakeModelServerThread(record=False) as upstream, ReceiverThread() as receiver:
        try:
            # The gateway boots while the tenant is seeded: it has nothing cached to go stale.
            gateway = Gateway(env, tmp_path).launch()
            started.append(gateway)
            tenant = _seed(env, upstream.url, receiver.url)
            receiver.receiver.secret = tenant["webhook_secret"]
            gateway.ready()
            worker = Celery(env, tmp_path, role="worker").start()
            beat = Celery(env, tmp_path, role="beat").start()
            started += [worker, beat]
            yield Stack(
                tmp_path,
                env,
                database_url,
                private_postgres,
                redis,
                gateway,
                worker,
                beat,
                upstream,
                receiver.receiver,
                tenant,
            )
            print(f"logs: {tmp_path}")
        finally:
            for process in reversed(started):
                process.stop() if isinstance(process, Gateway) else process.kill()
            redis.kill()
            if not private_postgres.running():
                private_postgres.start()
