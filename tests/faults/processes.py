"""Private, breakable copies of the stack's processes: Redis, PostgreSQL, gunicorn, Celery.

Nothing here touches the machine's shared PostgreSQL (5432) or Redis (6379): every component a fault
test breaks runs on its own free port with its state in a temporary directory.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Self

import httpx
import psutil

from gateway_project.env import BASE_DIR
from tests.waiting import wait_until

PG_BIN = Path("/usr/lib/postgresql/15/bin")
PG_USER = "postgres"


def free_port() -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def spawn(args: list[str], *, env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    """Start `args` in a session of its own (`group_kill` reaches its children), output to `log`."""
    with log.open("ab") as out:
        return subprocess.Popen(
            args,
            cwd=BASE_DIR,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def group_kill(proc: subprocess.Popen[bytes], sig: int = signal.SIGKILL) -> None:
    """Signal a process started by this module and everything in its session."""
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=5)


def log_tail(path: Path, lines: int = 40) -> str:
    """The end of a child's log, for assertion messages."""
    if not path.exists():
        return ""
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


class PrivateRedis:
    """A redis-server with an append-only file, killable and restartable on the same port."""

    def __init__(self, directory: Path) -> None:
        self.dir, self.port = directory, free_port()
        self.log = directory / "redis.log"
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """Its REDIS_URL."""
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> PrivateRedis:
        """Start (again) on the same port and directory; returns once it answers PING."""
        args = ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", ""]
        args += ["--appendonly", "yes", "--dir", str(self.dir)]
        self.proc = spawn(args, env=dict(os.environ), log=self.log)
        wait_until(self.ping, timeout=15, what=f"redis on {self.port}\n{log_tail(self.log)}")
        return self

    def ping(self) -> bool:
        """True when the server answers."""
        import redis

        client = redis.Redis(port=self.port, socket_connect_timeout=0.5, socket_timeout=0.5)
        try:
            return bool(client.ping())
        except (redis.RedisError, OSError):
            return False
        finally:
            client.close()

    def kill(self) -> None:
        """SIGKILL the server (the append-only file stays)."""
        if self.proc is not None:
            group_kill(self.proc)


def _as_postgres(args: list[str]) -> list[str]:
    # root cannot run postgres: drop to the postgres user for every server-side command.
    return ["runuser", "-u", PG_USER, "--", *args] if os.geteuid() == 0 else args


class PrivatePostgres:
    """A throwaway PostgreSQL 15 cluster (trust auth) on a free port; stoppable and restartable."""

    def __init__(self) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="gw-faults-pg-"))
        self.data, self.port = self.dir / "data", free_port()
        self.log = self.dir / "postgres.log"

    def url(self, name: str) -> str:
        """A DATABASE_URL for database `name`."""
        return f"postgres://postgres@127.0.0.1:{self.port}/{name}"

    def init(self) -> PrivatePostgres:
        """initdb into the temporary directory."""
        if os.geteuid() == 0:
            shutil.chown(self.dir, user=PG_USER)
        initdb = [str(PG_BIN / "initdb"), "-D", str(self.data), "-U", "postgres", "-A", "trust"]
        subprocess.run(_as_postgres(initdb), check=True, capture_output=True, timeout=120)
        return self

    def _ctl(self, *args: str) -> None:
        ctl = [str(PG_BIN / "pg_ctl"), "-D", str(self.data), "-l", str(self.log), *args]
        subprocess.run(_as_postgres(ctl), check=True, capture_output=True, timeout=60)

    def start(self) -> None:
        """Start and wait until it accepts connections."""
        options = f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 -c fsync=off"
        self._ctl("-o", options, "-w", "start")

    def stop(self) -> None:
        """Fast shutdown: every session is terminated."""
        self._ctl("-m", "fast", "-w", "stop")

    def running(self) -> bool:
        """True when the postmaster runs."""
        return (self.data / "postmaster.pid").exists()

    def createdb(self, name: str) -> None:
        """CREATE DATABASE `name`."""
        import psycopg

        with psycopg.connect(self.url("postgres"), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')

    def destroy(self) -> None:
        """Stop (immediately) and delete the cluster."""
        if self.running():
            self._ctl("-m", "immediate", "stop")
        shutil.rmtree(self.dir, ignore_errors=True)


def manage(env: dict[str, str], *args: str) -> str:
    """Run `python <args>` in the project with `env`; its stdout."""
    out = subprocess.run(
        [sys.executable, *args], cwd=BASE_DIR, env=env, capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, f"{args} failed:\n{out.stdout}\n{out.stderr}"
    return out.stdout


class Gateway:
    """gunicorn with two uvicorn workers on a free port, its output in <directory>/<name>.log."""

    def __init__(self, env: dict[str, str], directory: Path, name: str = "gunicorn") -> None:
        self.env, self.port, self.log = env, free_port(), directory / f"{name}.log"
        self.directory = directory
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """Root URL."""
        return f"http://127.0.0.1:{self.port}"

    @property
    def metrics_dir(self) -> Path:
        """Where the workers write their metrics."""
        return self.directory / "metrics"

    def command(self) -> tuple[list[str], dict[str, str]]:
        """The argv and environment that start the gateway."""
        args = [sys.executable, "-m", "gunicorn", "gateway_project.asgi:application"]
        args += ["-k", "gateway_project.worker.GatewayWorker"]
        args += ["-c", "python:gateway_project.gunicorn_conf"]
        args += ["-w", "2", "-b", f"127.0.0.1:{self.port}"]
        args += ["--graceful-timeout", "5"]
        return args, {**self.env, "PROMETHEUS_MULTIPROC_DIR": str(self.metrics_dir)}

    def start(self) -> Self:
        """Start and wait until /healthz answers and both workers run."""
        return self.launch().ready()

    def launch(self) -> Self:
        """Start without waiting (the caller does other work meanwhile, then calls `ready`)."""
        args, env = self.command()
        self.proc = spawn(args, env=env, log=self.log)
        return self

    def ready(self) -> Self:
        """Wait until /healthz answers and both workers accept connections."""
        wait_until(self._healthy, timeout=60, what=f"gateway up\n{log_tail(self.log)}")
        wait_until(lambda: len(self.workers()) == 2, timeout=30, what="two gunicorn workers")
        for worker in self.workers():
            self.wait_accepting(worker.pid)
        return self

    def wait_accepting(self, worker: int) -> None:
        """Until a new connection lands on `worker` (a worker just forked may still boot)."""
        wait_until(lambda: self._accepts(worker), timeout=30, what=f"worker {worker} accepts")

    def _accepts(self, worker: int) -> bool:
        with socket.create_connection(("127.0.0.1", self.port), timeout=5) as conn:
            conn.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            conn.recv(65536)
            return self.streams_held(psutil.Process(worker)) > 0

    def _healthy(self) -> bool:
        assert self.proc is not None and self.proc.poll() is None, log_tail(self.log)
        try:
            return httpx.get(f"{self.url}/healthz", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    def workers(self) -> list[psutil.Process]:
        """The live worker processes of the master."""
        assert self.proc is not None
        return [p for p in psutil.Process(self.proc.pid).children() if p.is_running()]

    def streams_held(self, worker: psutil.Process) -> int:
        """Established client connections the worker holds on the gateway port."""
        return sum(
            1
            for c in worker.net_connections(kind="tcp")
            if c.status == psutil.CONN_ESTABLISHED and c.laddr and c.laddr.port == self.port
        )

    def stop(self) -> None:
        """Stop gunicorn and its workers."""
        if self.proc is not None:
            group_kill(self.proc, signal.SIGTERM)


def suite_database_url() -> str:
    """The running test's database as a DATABASE_URL, for child processes that share it."""
    from django.db import connection

    db = connection.settings_dict
    auth = db["USER"] + (f":{db['PASSWORD']}" if db["PASSWORD"] else "")
    return f"postgres://{auth}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/{db['NAME']}"


def suite_env(**extra: str) -> dict[str, str]:
    """The environment of a child process on the running test's database and Redis (PostgreSQL
    only: an in-memory SQLite test database cannot be shared), plus `extra`."""
    from django.conf import settings

    return {
        **os.environ,
        "DATABASE_URL": suite_database_url(),
        "REDIS_URL": settings.REDIS_URL,
        "GATEWAY_UPSTREAM_ALLOWLIST": "127.0.0.0/8",
        **extra,
    }


class Celery:
    """A Celery worker or beat, killable and restartable; output in <directory>/celery-<role>.log.

    The worker runs a prefork pool of 2 processes, or with `solo` the tasks in its main process (one
    at a time, as a worker that a test kills mid-task needs)."""

    def __init__(
        self, env: dict[str, str], directory: Path, *, role: str, solo: bool = False
    ) -> None:
        self.env, self.dir, self.role, self.solo = env, directory, role, solo
        self.log = directory / f"celery-{role}.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0

    def start(self) -> Celery:
        """Start (again); returns at once (the pipeline's progress shows it works)."""
        self.starts += 1
        args = [sys.executable, "-m", "celery", "-A", "gateway_project", self.role, "-l", "info"]
        if self.role == "worker":
            args += ["-P", "solo"] if self.solo else ["--concurrency", "2"]
            args += ["-n", f"faults{self.starts}@%h"]
            args += ["--without-gossip", "--without-mingle", "--without-heartbeat"]
        else:
            args += ["-s", str(self.dir / "celerybeat-schedule")]
        self.proc = spawn(args, env=self.env, log=self.log)
        return self

    def kill(self) -> None:
        """SIGKILL the main process and its pool processes at once."""
        if self.proc is not None:
            group_kill(self.proc)
