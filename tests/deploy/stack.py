"""deploy/compose.yaml's services run as processes on loopback, each exactly as Compose starts it.

The only translations are the ones Compose's network makes: the `postgres` and `redis` service
names become this machine's servers, a node's `--bind 0.0.0.0:8000` becomes a free loopback port
(Compose publishes each on its own host port), and each container's state directory is its own.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import psycopg

from tests.deploy.manifests import ROOT, compose, image_env, interpolate
from tests.fakes.model_server import FakeModelServerThread
from tests.faults.processes import free_port, group_kill, log_tail
from tests.waiting import wait_until

CONTAINER_BIND = "0.0.0.0:8000"
COMPOSE_DATABASE = "postgres://gateway:{password}@postgres:5432/gateway"
COMPOSE_REDIS = "redis://redis:6379/0"
NODES = ("gateway-1", "gateway-2")


class LoopbackStack:
    """The gateway services of the compose file, started with `python -m gateway_project.cli`."""

    def __init__(
        self,
        directory: Path,
        *,
        database_url: str,
        redis_url: str,
        launcher: list[str] | None = None,
        base_env: dict[str, str] | None = None,
    ) -> None:
        # `launcher` runs `gateway` (default: this checkout's); an image's is given with its own
        # filesystem, where every service keeps the image's state directory.
        self.launcher = launcher or [sys.executable, "-m", "gateway_project.cli"]
        self.own_state = launcher is None
        self.base_env = base_env or {"PATH": os.environ["PATH"], **image_env()}
        self.dir, self.services = directory, compose()["services"]
        self.database_url, self.redis_url = database_url, redis_url
        self.given = {"SECRET_KEY": secrets.token_urlsafe(50), "POSTGRES_PASSWORD": "pw"}
        self.ports: dict[str, int] = {}
        self.procs: dict[str, subprocess.Popen[bytes]] = {}

    def env(self, name: str) -> dict[str, str]:
        """The service's environment: the image's ENV, then the compose file's, translated."""
        declared = {
            k: interpolate(str(v), self.given) for k, v in self.spec(name)["environment"].items()
        }
        password = self.given["POSTGRES_PASSWORD"]
        assert declared["DATABASE_URL"] == COMPOSE_DATABASE.format(password=password)
        assert declared["REDIS_URL"] == COMPOSE_REDIS
        declared.update(DATABASE_URL=self.database_url, REDIS_URL=self.redis_url)
        state = self.dir / name
        state.mkdir(exist_ok=True)
        env = {**self.base_env, **declared}
        if self.own_state:
            env["GATEWAY_VAR_DIR"] = str(state)
        if name in self.ports and env.get("GATEWAY_BIND") == CONTAINER_BIND:
            env["GATEWAY_BIND"] = f"127.0.0.1:{self.ports[name]}"
        return env

    def spec(self, name: str) -> dict[str, Any]:
        """The compose service definition."""
        return dict(self.services[name])

    def argv(self, name: str, command: list[str] | None = None) -> list[str]:
        """`gateway <command>` of the service, its container port moved to a free loopback one."""
        args = [str(arg) for arg in (command or self.spec(name)["command"])]
        if CONTAINER_BIND in args:
            self.ports[name] = free_port()
            args[args.index(CONTAINER_BIND)] = f"127.0.0.1:{self.ports[name]}"
        return [*self.launcher, *args]

    def run(self, name: str, *command: str) -> subprocess.CompletedProcess[str]:
        """A one-shot container (`docker compose run --rm <name> <command>`)."""
        return subprocess.run(
            self.argv(name, list(command) or None),
            cwd=ROOT,
            env=self.env(name),
            capture_output=True,
            text=True,
            timeout=180,
        )

    def start(self, name: str) -> subprocess.Popen[bytes]:
        """A long-running service, its output in <dir>/<name>.log."""
        argv, env = self.argv(name), self.env(name)
        with (self.dir / f"{name}.log").open("ab") as log:
            proc = subprocess.Popen(
                argv,
                cwd=ROOT,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.procs[name] = proc
        return proc

    def url(self, name: str) -> str:
        """The node's base URL."""
        return f"http://127.0.0.1:{self.ports[name]}"

    def wait_ready(self, name: str) -> None:
        """Until the node's /readyz answers 200 for a host name it serves."""

        def ready() -> bool:
            assert self.procs[name].poll() is None, self.log(name)
            try:
                response = httpx.get(f"{self.url(name)}/readyz", headers=self.host, timeout=2)
            except httpx.HTTPError:
                return False
            return response.status_code == 200

        wait_until(ready, timeout=90, interval=0.2, what=f"{name} ready\n{self.log(name)}")

    @property
    def host(self) -> dict[str, str]:
        """A Host header from the stack's ALLOWED_HOSTS."""
        allowed = self.env("gateway-1")["ALLOWED_HOSTS"].split(",")
        return {"Host": allowed[0]}

    def log(self, name: str) -> str:
        """The end of a service's output."""
        return log_tail(self.dir / f"{name}.log")

    def stop(self) -> None:
        """SIGTERM every service, SIGKILL what does not stop."""
        for proc in self.procs.values():
            group_kill(proc, 15)


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
    manage = json.loads(created.stdout.strip().splitlines()[-1])["management_key"]
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


def stack_serves_inference(stack: LoopbackStack, database_url: str) -> None:
    """Migrate, check, start both nodes, the worker and beat; onboard; infer on both nodes."""
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
