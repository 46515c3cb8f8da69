"""deploy/compose.yaml's services run as processes on loopback, each exactly as Compose starts it.

The only translations are the ones Compose's network makes: the `postgres` and `redis` service
names become this machine's servers, a node's `--bind 0.0.0.0:8000` becomes a free loopback port
(Compose publishes each on its own host port), and each container's state directory is its own.
"""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx

from tests.deploy.manifests import ROOT, compose, image_env, interpolate
from tests.faults.processes import free_port, group_kill, log_tail
from tests.waiting import wait_until

CONTAINER_BIND = "0.0.0.0:8000"
COMPOSE_DATABASE = "postgres://gateway:{password}@postgres:5432/gateway"
COMPOSE_REDIS = "redis://redis:6379/0"


class LoopbackStack:
    """The gateway services of the compose file, started with `python -m gateway_project.cli`."""

    def __init__(
        self,
        directory: Path,
        *,
        database_url: str,
        redis_url: str,
        launcher: list[str] | None = None,
    ) -> None:
        # `launcher` runs `gateway` (default: this checkout's); an image's is given with its own
        # filesystem, where every service keeps the image's state directory.
        self.launcher = launcher or [sys.executable, "-m", "gateway_project.cli"]
        self.own_state = launcher is None
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
        env = {"PATH": os.environ["PATH"], **image_env(), **declared}
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
