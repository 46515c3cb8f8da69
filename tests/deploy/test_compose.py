"""deploy/compose.yaml, run on loopback: the services it declares serve inference together."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.deploy.manifests import compose, settings_env_names
from tests.deploy.stack import NODES, LoopbackStack, stack_serves_inference

pytestmark = pytest.mark.slow


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
def stack(tmp_path: Path, database_url: str, redis_url: str) -> Iterator[LoopbackStack]:
    stack = LoopbackStack(tmp_path, database_url=database_url, redis_url=redis_url)
    yield stack
    stack.stop()


@pytest.mark.deploy
def test_compose_stack_serves_inference_on_loopback(stack, database_url):
    stack_serves_inference(stack, database_url)


def test_check_names_what_is_wrong_in_plain_words(stack):
    stack.redis_url = "redis://127.0.0.1:1/0"

    checked = stack.run("migrate", "check")

    assert checked.returncode == 1
    assert "FAIL database: " in checked.stdout and "run `gateway migrate`" in checked.stdout
    assert "FAIL redis: cannot reach Redis at REDIS_URL" in checked.stdout
