"""Processes under test: the fake upstreams and the peers (Portkey, LiteLLM); installs on demand."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
ROOT = BENCH_DIR.parent
PEERS_DIR = BENCH_DIR / ".peers"
HOST = "127.0.0.1"

PORTKEY_VERSION = "1.15.2"
PORTKEY_OVERRIDES = {"@hono/node-server": "1.13.5", "hono": "4.9.7", "@hono/node-ws": "1.2.0"}
LITELLM_VERSION = "1.109.1"
LITELLM_OVERRIDES = ("certifi==2026.10.18", "litellm-proxy-extras==0.4.110")
LITELLM_MASTER_KEY = "sk-bench-litellm-master-7d3e9a"
LITELLM_READY_S = 300.0
FAKE_MODEL = "fake-model"
SLOW_MODEL = "fake-model-slow"
TOKENS = 20  # content chunks per response (the body asks max_tokens=20)
SLOW_DELAY_MS = 50.0  # first byte + 19 gaps of 50 ms = one-second streams
NICE = -10  # priority of the systems and the load generator when running as root


class Unavailable(Exception):
    """A system that cannot be installed or started; the message is the reason shown."""


@dataclass
class Proc:
    """One spawned server (in its own process group) and its log."""

    name: str
    popen: subprocess.Popen[bytes]
    log: Path

    def alive(self) -> bool:
        """True while the process runs."""
        return self.popen.poll() is None

    def log_tail(self, lines: int = 6) -> str:
        """The last lines of its log, for error messages."""
        try:
            text = self.log.read_text(errors="replace").strip().splitlines()
        except OSError:
            return ""
        return " | ".join(line.strip() for line in text[-lines:])


@dataclass
class System:
    """A system under test: where to POST, with which headers and model names."""

    name: str
    url: str
    headers: list[str] = field(default_factory=list)
    models: dict[str, str] = field(default_factory=lambda: {"fast": FAKE_MODEL, "slow": SLOW_MODEL})
    procs: list[Proc] = field(default_factory=list)
    slow_url: str | None = None  # a different URL for the slow upstream (direct only)
    slow_headers: list[str] | None = None
    notes: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)

    def target(self, *, slow: bool) -> tuple[str, list[str], str]:
        """(url, headers, model) for the fast or the slow upstream."""
        url = self.slow_url if slow and self.slow_url else self.url
        headers = self.slow_headers if slow and self.slow_headers is not None else self.headers
        return url, headers, self.models["slow" if slow else "fast"]


def free_port() -> int:
    """An unused loopback TCP port."""
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


def priority_prefix() -> list[str]:
    """`nice -n -10` as root: every system and the load generator alike get ahead of other work."""
    from shutil import which

    if hasattr(os, "geteuid") and os.geteuid() == 0 and which("nice"):
        return ["nice", "-n", str(NICE)]
    return []


def proc_spawn(
    name: str, args: list[str], *, logs: Path, env: dict[str, str] | None = None, cwd: Path = ROOT
) -> Proc:
    """Start a server in its own session so that stopping it stops its children too."""
    log = logs / f"{name}.log"
    with open(log, "ab") as out:
        try:
            popen = subprocess.Popen(
                [*priority_prefix(), *args],
                cwd=cwd,
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        except OSError as exc:
            raise Unavailable(f"cannot start {name}: {exc}") from exc
    return Proc(name, popen, log)


def proc_stop(proc: Proc, *, timeout: float = 10.0) -> None:
    """SIGTERM the process group, SIGKILL it after `timeout`."""
    if not proc.alive():
        return
    try:
        os.killpg(proc.popen.pid, signal.SIGTERM)
        proc.popen.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.popen.pid, signal.SIGKILL)
        proc.popen.wait(timeout=5)
    except ProcessLookupError:
        pass


def http_ready(
    url: str,
    *,
    proc: Proc,
    timeout: float,
    method: str = "GET",
    body: bytes | None = None,
    headers: dict[str, str] | None = None,
) -> None:
    """Poll `url` until it answers 2xx; raise Unavailable if the process dies or time runs out."""
    deadline = time.monotonic() + timeout
    last = "no answer"
    while time.monotonic() < deadline:
        if not proc.alive():
            raise Unavailable(f"{proc.name} exited with {proc.popen.returncode}: {proc.log_tail()}")
        request = urllib.request.Request(url, data=body, method=method, headers=headers or {})
        try:
            with urllib.request.urlopen(request, timeout=5) as response:  # noqa: S310 - loopback
                if 200 <= response.status < 300:
                    return
        except urllib.error.HTTPError as exc:
            last = f"HTTP {exc.code}: {exc.read()[:200]!r}"
        except OSError as exc:
            last = str(exc)
        time.sleep(0.2)
    raise Unavailable(f"{proc.name} not ready after {timeout:.0f}s ({last}): {proc.log_tail()}")


def fake_servers_start(*, logs: Path) -> tuple[Proc, Proc, int, int]:
    """Two fake upstreams: fast (no delay) and slow (one-second streams)."""
    fast_port, slow_port = free_port(), free_port()
    base = [
        sys.executable,
        "-m",
        "tests.fakes.model_server",
        "--host",
        HOST,
        "--no-record",
        "--models",
        f"{FAKE_MODEL},{SLOW_MODEL}",
    ]
    fast = proc_spawn("fake-fast", [*base, "--port", str(fast_port)], logs=logs)
    slow = proc_spawn(
        "fake-slow",
        [
            *base,
            "--port",
            str(slow_port),
            "--delay-ms",
            str(SLOW_DELAY_MS),
            "--first-byte-delay-ms",
            str(SLOW_DELAY_MS),
        ],
        logs=logs,
    )
    for proc, port in ((fast, fast_port), (slow, slow_port)):
        http_ready(f"http://{HOST}:{port}/healthz", proc=proc, timeout=20)
    return fast, slow, fast_port, slow_port


def direct_system(*, fast_port: int, slow_port: int, procs: list[Proc]) -> System:
    """The fake upstream itself, no proxy in between."""
    return System(
        "direct",
        f"http://{HOST}:{fast_port}/v1/chat/completions",
        slow_url=f"http://{HOST}:{slow_port}/v1/chat/completions",
        procs=procs,
        headers=["Authorization: Bearer sk-direct"],
        notes=[
            "tests/fakes/model_server.py (aiohttp, 1 process); the long streams come "
            f"from a second instance with {SLOW_DELAY_MS:g} ms between chunks"
        ],
    )


def _run_install(args: list[str], *, cwd: Path, log: Path, timeout: float) -> None:
    with open(log, "ab") as out:
        out.write(f"$ {' '.join(args)}\n".encode())
        out.flush()
        try:
            done = subprocess.run(
                args, cwd=cwd, stdout=out, stderr=subprocess.STDOUT, timeout=timeout, check=False
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise Unavailable(f"install step failed: {' '.join(args[:4])}…: {exc}") from exc
    if done.returncode != 0:
        tail = log.read_text(errors="replace").strip().splitlines()[-3:]
        raise Unavailable(f"install step exited {done.returncode}: {' | '.join(tail)}")


def portkey_install() -> Path:
    """npm-install @portkey-ai/gateway with the hono overrides (once); return its start script."""
    home = PEERS_DIR / "portkey"
    script = home / "node_modules" / "@portkey-ai" / "gateway" / "build" / "start-server.js"
    package = {
        "name": "bench-portkey",
        "private": True,
        "dependencies": {"@portkey-ai/gateway": PORTKEY_VERSION},
        "overrides": PORTKEY_OVERRIDES,
    }
    manifest = home / "package.json"
    if script.exists() and manifest.exists() and json.loads(manifest.read_text()) == package:
        return script
    for tool in ("node", "npm"):
        if not _which(tool):
            raise Unavailable(f"`{tool}` not found (apt-get install -y nodejs npm)")
    home.mkdir(parents=True, exist_ok=True)
    manifest.write_text(json.dumps(package, indent=2) + "\n")
    print(f"  installing Portkey gateway {PORTKEY_VERSION} into {home} …", flush=True)
    _run_install(
        ["npm", "install", "--no-audit", "--no-fund"],
        cwd=home,
        log=home / "install.log",
        timeout=600,
    )
    if not script.exists():
        raise Unavailable(f"npm install finished but {script} is missing")
    return script


def portkey_start(*, logs: Path, fast_port: int, slow_port: int) -> System:
    """Portkey in Node, upstream from x-portkey-custom-host with the openai provider."""
    script = portkey_install()
    port = free_port()
    env = {**os.environ, "NODE_ENV": "production"}
    proc = proc_spawn(
        "portkey",
        ["node", str(script), f"--port={port}", "--headless"],
        logs=logs,
        env=env,
        cwd=script.parent,
    )
    _ready_or_stop(proc, f"http://{HOST}:{port}/", timeout=30)
    common = ["x-portkey-provider: openai", "Authorization: Bearer sk-portkey-upstream"]
    return System(
        "portkey",
        f"http://{HOST}:{port}/v1/chat/completions",
        procs=[proc],
        headers=[*common, f"x-portkey-custom-host: http://{HOST}:{fast_port}/v1"],
        slow_headers=[*common, f"x-portkey-custom-host: http://{HOST}:{slow_port}/v1"],
        notes=[f"Portkey gateway {PORTKEY_VERSION}, node {_node_version()}, 1 process"],
    )


def litellm_install() -> Path:
    """A venv with litellm[proxy] under bench/.peers/litellm (once); return its `litellm` binary."""
    home = PEERS_DIR / "litellm"
    venv = home / "venv"
    binary = venv / "bin" / "litellm"
    stamp = home / f".installed-{LITELLM_VERSION}"
    if binary.exists() and stamp.exists():
        return binary
    home.mkdir(parents=True, exist_ok=True)
    log = home / "install.log"
    print(f"  installing LiteLLM {LITELLM_VERSION} into {venv} (a few minutes) …", flush=True)
    python = _which("python3.11") or _which("python3") or sys.executable
    if not (venv / "bin" / "python").exists():
        _run_install([python, "-m", "venv", str(venv)], cwd=home, log=log, timeout=120)
    pip = str(venv / "bin" / "pip")
    _run_install([pip, "install", "--quiet", "uv"], cwd=home, log=log, timeout=300)
    overrides = home / "overrides.txt"
    overrides.write_text("\n".join(LITELLM_OVERRIDES) + "\n")
    _run_install(
        [
            str(venv / "bin" / "uv"),
            "pip",
            "install",
            "--python",
            str(venv / "bin" / "python"),
            "--override",
            str(overrides),
            f"litellm[proxy]=={LITELLM_VERSION}",
            "opentelemetry-sdk",
        ],
        cwd=home,
        log=log,
        timeout=900,
    )
    if not binary.exists():
        raise Unavailable(f"install finished but {binary} is missing")
    stamp.touch()
    return binary


def _litellm_config(path: Path, *, fast_port: int, slow_port: int) -> None:
    models = []
    for name, port in ((FAKE_MODEL, fast_port), (SLOW_MODEL, slow_port)):
        models.append(f"""  - model_name: {name}
    litellm_params:
      model: openai/{name}
      api_base: http://{HOST}:{port}/v1
      api_key: sk-litellm-upstream
""")
    path.write_text(
        "model_list:\n"
        + "".join(models)
        + f"""general_settings:
  master_key: {LITELLM_MASTER_KEY}
litellm_settings:
  telemetry: false
"""
    )


def litellm_workers() -> int:
    """LiteLLM's workers: one per core, as its deployment docs recommend for `--num_workers`."""
    return os.cpu_count() or 1


def litellm_start(*, logs: Path, tmp: Path, fast_port: int, slow_port: int) -> System:
    """LiteLLM proxy, one worker per core, no database, a master key, both fake models."""
    binary = litellm_install()
    workers = litellm_workers()
    config = tmp / "litellm.yaml"
    _litellm_config(config, fast_port=fast_port, slow_port=slow_port)
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL")}
    env |= {"LITELLM_LOCAL_MODEL_COST_MAP": "True", "LITELLM_MASTER_KEY": LITELLM_MASTER_KEY}
    proc = proc_spawn(
        "litellm",
        [
            str(binary),
            "--config",
            str(config),
            "--host",
            HOST,
            "--port",
            str(port),
            "--num_workers",
            str(workers),
        ],
        logs=logs,
        env=env,
        cwd=tmp,
    )
    auth = {"Authorization": f"Bearer {LITELLM_MASTER_KEY}", "Content-Type": "application/json"}
    probe = json.dumps(
        {"model": FAKE_MODEL, "max_tokens": 2, "messages": [{"role": "user", "content": "ready?"}]}
    ).encode()
    # Each worker imports LiteLLM and loads its config on its own: minutes on a busy machine.
    _ready_or_stop(
        proc,
        f"http://{HOST}:{port}/v1/chat/completions",
        timeout=LITELLM_READY_S,
        method="POST",
        body=probe,
        headers=auth,
    )
    return System(
        "litellm",
        f"http://{HOST}:{port}/v1/chat/completions",
        procs=[proc],
        headers=[f"Authorization: Bearer {LITELLM_MASTER_KEY}"],
        notes=[
            f"LiteLLM proxy {LITELLM_VERSION}, {workers} workers (`--num_workers`, one per core), "
            "no database"
        ],
    )


def _ready_or_stop(proc: Proc, url: str, *, timeout: float, **request: Any) -> None:
    """`http_ready`, stopping the process (and its workers) when it does not become ready."""
    try:
        http_ready(url, proc=proc, timeout=timeout, **request)
    except Unavailable:
        proc_stop(proc)
        raise


def _which(tool: str) -> str | None:
    from shutil import which

    return which(tool)


def _node_version() -> str:
    try:
        return subprocess.run(
            ["node", "--version"], capture_output=True, text=True, timeout=10
        ).stdout.strip()
    except OSError:
        return "?"
