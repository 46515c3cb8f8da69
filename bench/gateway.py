"""Our gateway as a system under test: fresh database, a real federated key, two limits, gunicorn.

`python -m bench.gateway setup FAST_URL SLOW_URL` (run by `gateway_start` with the gateway's env)
creates the workspace through the services and prints the key and slugs as JSON.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

from bench.peers import HOST, ROOT, System, Unavailable, free_port, http_ready, proc_spawn
from gateway_project.cli import serve_argv

PG_DATABASE = "gw_bench"
REDIS_URL = "redis://127.0.0.1:6379/7"
WORKERS = 2
PREFIX = "bench"
SLUGS = {"fast": f"{PREFIX}/fast", "slow": f"{PREFIX}/slow"}
RATE_LIMIT = {"type": "REQUEST", "unit": "MINUTE", "threshold": 1_000_000_000}
USAGE_LIMIT = {"type": "TOKEN", "unit": "DAY", "threshold": 1_000_000_000_000}
USAGE_STREAM = "gw:usage"


def _reachable(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


def _postgres_reset(name: str) -> str | None:
    """Drop and recreate database `name`; None when PostgreSQL is unreachable or refuses."""
    if not _reachable("127.0.0.1", 5432):
        return None
    try:
        import psycopg

        with psycopg.connect(
            "postgresql://postgres@127.0.0.1:5432/postgres", autocommit=True, connect_timeout=5
        ) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            conn.execute(f'CREATE DATABASE "{name}"')
    except Exception as exc:  # noqa: BLE001 - any failure means: use the embedded default
        print(f"  PostgreSQL at 127.0.0.1:5432 unusable ({exc}); using SQLite", flush=True)
        return None
    return f"postgres://postgres@127.0.0.1:5432/{name}"


def _redis_reset(url: str) -> str | None:
    """Flush our own Redis database at `url`; None when Redis on 6379 is unreachable."""
    if not _reachable("127.0.0.1", 6379):
        return None
    try:
        import redis

        redis.Redis.from_url(url, socket_timeout=5).flushdb()
    except Exception as exc:  # noqa: BLE001
        print(f"  Redis at 127.0.0.1:6379 unusable ({exc}); using the embedded one", flush=True)
        return None
    return url


def gateway_env_base(*, tmp: Path) -> dict[str, str]:
    """This process's environment without its stores, plus what every bench's gateway runs with
    (its var directory under `tmp`)."""
    var = tmp / "gateway-var"
    var.mkdir(parents=True, exist_ok=True)
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("DATABASE_URL", "REDIS_URL", "GATEWAY_LIMITS_REDIS_URL")
    }
    env |= {
        "GATEWAY_UPSTREAM_ALLOWLIST": "127.0.0.0/8",
        "GATEWAY_VAR_DIR": str(var),
        "SECRET_KEY": "bench-secret-key-not-for-production-4c7d1e",
        "DJANGO_SETTINGS_MODULE": "gateway_project.settings",
    }
    return env


def gateway_env(
    *, tmp: Path, database: str = PG_DATABASE, redis_url: str = REDIS_URL
) -> tuple[dict[str, str], list[str]]:
    """The gateway's environment and a description of its stores (PostgreSQL `database` and
    `redis_url`, both emptied first, when they answer; else the embedded defaults)."""
    env = gateway_env_base(tmp=tmp)
    notes = []
    database_url = _postgres_reset(database)
    if database_url:
        env["DATABASE_URL"] = database_url
        notes.append(f"PostgreSQL {database} (fresh)")
    else:
        notes.append("SQLite (embedded default)")
    redis_reset = _redis_reset(redis_url)
    if redis_reset:
        env["REDIS_URL"] = redis_reset
        notes.append(f"Redis {redis_reset}")
    else:
        notes.append("embedded Redis (unix socket)")
    return env, notes


def manage_run(env: dict[str, str], args: list[str], *, what: str, timeout: float = 300) -> str:
    """Run `python <args>` in the project with `env`; its stdout, or Unavailable saying why not."""
    try:
        done = subprocess.run(
            [sys.executable, *args],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        raise Unavailable(f"{what} timed out after {timeout:.0f}s") from exc
    if done.returncode != 0:
        tail = (done.stderr or done.stdout).strip().splitlines()[-3:]
        raise Unavailable(f"{what} failed: {' | '.join(tail)}")
    return done.stdout


def gateway_start(*, logs: Path, tmp: Path, fast_port: int, slow_port: int) -> System:
    """Migrate, create the bench workspace, start a node as `gateway serve` does, probe it."""
    env, notes = gateway_env(tmp=tmp)
    if "REDIS_URL" not in env:
        manage_run(env, ["-m", "gateway_project.embedded_redis", "start"], what="embedded Redis")
    manage_run(env, ["manage.py", "migrate", "--noinput"], what="migrate")
    out = manage_run(
        env,
        [
            "-m",
            "bench.gateway",
            "setup",
            f"http://{HOST}:{fast_port}/v1",
            f"http://{HOST}:{slow_port}/v1",
        ],
        what="bench data setup",
    )
    setup = json.loads(out.strip().splitlines()[-1])
    port = free_port()
    command = serve_argv(workers=WORKERS, bind=f"{HOST}:{port}")
    proc = proc_spawn("gateway", command, logs=logs, env=env)
    system = System(
        "gateway",
        f"http://{HOST}:{port}/v1/chat/completions",
        procs=[proc],
        headers=[f"Authorization: Bearer {setup['key']}"],
        models=dict(SLUGS),
        notes=[
            f"`gateway serve`: gunicorn, {WORKERS} gateway (uvicorn) workers",
            *notes,
            "federated key, group with 2 limits (REQUEST/MINUTE rate, "
            "TOKEN/DAY usage), usage events recorded",
        ],
        env=env,
    )
    try:
        http_ready(f"http://{HOST}:{port}/healthz", proc=proc, timeout=60)
        _probe(system, stream=False)
        _probe(system, stream=True)
    except Unavailable:
        from bench.peers import proc_stop

        proc_stop(proc)
        raise
    return system


def _probe(system: System, *, stream: bool) -> None:
    """One real request through the gateway; Unavailable unless it answers a full completion."""
    url, headers, model = system.target(slow=False)
    body = {
        "model": model,
        "max_tokens": 20,
        "stream": stream,
        "messages": [{"role": "user", "content": "probe"}],
    }
    request = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST")
    request.add_header("Content-Type", "application/json")
    for header in headers:
        name, value = header.split(":", 1)
        request.add_header(name, value.strip())
    kind = "streaming" if stream else "JSON"
    try:
        with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310 - loopback
            data = response.read()
    except urllib.error.HTTPError as exc:
        raise Unavailable(f"{kind} probe answered HTTP {exc.code}: {exc.read()[:200]!r}") from exc
    except OSError as exc:
        raise Unavailable(f"{kind} probe failed: {exc}") from exc
    good = b"[DONE]" in data if stream else b'"choices"' in data
    if not good:
        raise Unavailable(f"{kind} probe answered an unexpected body: {data[:200]!r}")


def usage_events_count(system: System) -> int | None:
    """Length of the gateway's usage stream (events recorded and not yet ingested)."""
    env = system.env
    url = env.get("REDIS_URL") or f"unix://{Path(env.get('GATEWAY_VAR_DIR', '.')) / 'redis.sock'}"
    try:
        import redis

        return int(redis.Redis.from_url(url, socket_timeout=5).xlen(USAGE_STREAM))
    except Exception:  # noqa: BLE001 - only informative
        return None


def gateway_stop_extras(system: System) -> None:
    """Stop the embedded Redis if this run started one."""
    env = system.env
    if env and "REDIS_URL" not in env:
        subprocess.run(
            [sys.executable, "-m", "gateway_project.embedded_redis", "stop"],
            cwd=ROOT,
            env=env,
            capture_output=True,
            timeout=30,
            check=False,
        )


def _setup(fast_url: str, slow_url: str) -> dict[str, str]:
    """Workspace, org prefix, two endpoints, one group with two limits per slug, one key."""
    import django

    django.setup()
    from django.db import transaction

    from groups.services import group_create, org_prefix_register, workspace_create
    from groups.services.audit import SYSTEM_ACTOR
    from keys.services import api_key_create
    from routing.services import endpoint_create

    actor = SYSTEM_ACTOR
    with transaction.atomic():
        workspace = workspace_create(name="Bench Lab", actor=actor, onboarded=True)
        org_prefix_register(workspace=workspace, prefix=PREFIX, actor=actor)
        for kind, base_url in (("fast", fast_url), ("slow", slow_url)):
            target = {
                "provider": "OPENAI_COMPATIBLE",
                "base_url": base_url,
                "target_model": "fake-model",
            }
            endpoint_create(workspace=workspace, actor=actor, slug=SLUGS[kind], targets=[target])
        models = [
            {"slug": slug, "rate_limits": [dict(RATE_LIMIT)], "usage_limits": [dict(USAGE_LIMIT)]}
            for slug in SLUGS.values()
        ]
        group = group_create(
            workspace=workspace,
            actor=actor,
            external_entity_id="bench-customer",
            name="Bench customer",
            models=models,
        )
        _, key = api_key_create(workspace=workspace, group=group, actor=actor, name="bench")
    return {"key": key, "group_id": group.id, "workspace_id": workspace.id}


if __name__ == "__main__":
    if len(sys.argv) != 4 or sys.argv[1] != "setup":
        sys.exit("usage: python -m bench.gateway setup FAST_BASE_URL SLOW_BASE_URL")
    print(json.dumps(_setup(sys.argv[2], sys.argv[3])))
