"""deploy/compose.yaml, run on loopback: the services it declares serve inference together."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import httpx
import psycopg
import pytest

from tests.deploy.manifests import compose, settings_env_names
from tests.deploy.stack import LoopbackStack
from tests.fakes.model_server import FakeModelServerThread
from tests.faults.processes import PrivateRedis
from tests.waiting import wait_until

pytestmark = pytest.mark.slow
NODES = ("gateway-1", "gateway-2")


def test_compose_declares_the_stack_and_only_variables_the_gateway_reads():
    services = compose()["services"]

    commands = {name: spec.get("command") for name, spec in services.items()}
    variables = {var for spec in services.values() for var in spec.get("environment", {})}
    gateway_variables = {
        var
        for name in commands
        if name not in {"postgres", "redis"}
        for var in services[name]["environment"]
    }

    assert set(services) == {"postgres", "redis", "migrate", *NODES, "worker", "beat"}
    assert commands["redis"][1:3] == ["--appendonly", "yes"]
    assert services["migrate"]["restart"] == "no"
    assert {services[n]["depends_on"]["migrate"]["condition"] for n in NODES} == {
        "service_completed_successfully"
    }
    assert {services[n]["ports"][0] for n in NODES} == {"8001:8000", "8002:8000"}
    assert gateway_variables - settings_env_names() == set()
    assert variables >= {"DATABASE_URL", "REDIS_URL", "SECRET_KEY", "ALLOWED_HOSTS"}


@pytest.fixture
def database_url() -> Iterator[str]:
    """A new, empty database on the suite's PostgreSQL (what compose's postgres service gives)."""
    url = os.environ.get("DATABASE_URL", "")
    if not url.startswith("postgres"):
        pytest.skip("needs PostgreSQL: run with DATABASE_URL=postgres://... (make test does in CI)")
    base, _, name = url.rpartition("/")
    fresh = f"{name}_compose"
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{fresh}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{fresh}"')
    yield f"{base}/{fresh}"
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{fresh}" WITH (FORCE)')


@pytest.fixture
def stack(tmp_path: Path, database_url: str) -> Iterator[LoopbackStack]:
    redis = PrivateRedis(tmp_path).start()
    stack = LoopbackStack(tmp_path, database_url=database_url, redis_url=redis.url)
    try:
        yield stack
    finally:
        stack.stop()
        redis.kill()


def _ok(response: httpx.Response) -> dict:
    assert response.status_code == 200, response.text
    return response.json()


def _onboard(stack: LoopbackStack, upstream_url: str) -> str:
    """README's steps: create a workspace, then an endpoint, a group and a key over the API."""
    created = stack.run(
        "migrate",
        "create-workspace",
        "--name",
        "Acme",
        "--org-prefix",
        "acme",
        "--onboarded",
        "--upstream-allowlist",
        "127.0.0.0/8",
        "--json",
    )
    assert created.returncode == 0, created.stderr
    manage = created.stdout.strip().splitlines()[-1].split('"management_key": "')[1].split('"')[0]
    api = httpx.Client(
        base_url=f"{stack.url('gateway-1')}/v1/gateway",
        headers={"Authorization": f"Bearer {manage}", **stack.host},
        timeout=10,
    )
    target = {"provider": "OPENAI_COMPATIBLE", "base_url": upstream_url, "target_model": "m"}
    _ok(api.post("/endpoints", json={"slug": "acme/llama", "targets": [target]}))
    group = _ok(
        api.post(
            "/groups",
            json={"metadata": {"external_entity_id": "c1"}, "models": [{"slug": "acme/llama"}]},
        )
    )
    return str(_ok(api.post(f"/groups/{group['id']}/api_keys", json={"name": "k"}))["api_key"])


def _usage_rows(database_url: str) -> int:
    with psycopg.connect(database_url) as conn:
        row = conn.execute("SELECT count(*) FROM billing_usageevent").fetchone()
    return int(row[0]) if row else 0


def test_compose_stack_serves_inference_on_loopback(stack, database_url):
    migrated = stack.run("migrate")
    assert migrated.returncode == 0, migrated.stderr
    checked = stack.run("migrate", "check")
    assert checked.returncode == 0, checked.stdout + checked.stderr
    for name in (*NODES, "worker", "beat"):
        stack.start(name)
    for node in NODES:
        stack.wait_ready(node)

    with FakeModelServerThread(record=False) as upstream:
        key = _onboard(stack, upstream.url)
        body = {"model": "acme/llama", "messages": [{"role": "user", "content": "hi"}]}
        answers = [
            httpx.post(
                f"{stack.url(node)}/v1/chat/completions",
                json=body,
                headers={"Authorization": f"Bearer {key}", **stack.host},
                timeout=10,
            )
            for node in NODES
        ]

    assert [answer.status_code for answer in answers] == [200, 200], answers[0].text
    assert all(answer.json()["choices"][0]["message"]["content"] for answer in answers)
    # Beat schedules the ingest, the worker runs it: both requests reach the database.
    wait_until(lambda: _usage_rows(database_url) == 2, timeout=30, what="usage events ingested")
    probe = stack.run("gateway-1", "probe", "/readyz")
    assert probe.returncode == 0, probe.stderr


def test_check_names_what_is_wrong_in_plain_words(stack):
    stack.redis_url = "redis://127.0.0.1:1/0"

    checked = stack.run("migrate", "check")

    assert checked.returncode == 1
    assert "FAIL database: " in checked.stdout and "run `gateway migrate`" in checked.stdout
    assert "FAIL redis: cannot reach Redis at REDIS_URL" in checked.stdout
