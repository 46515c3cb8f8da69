"""`make bench-quick`: the gateway's added latency (c=1) and throughput (c=64), direct vs gateway.

One run starts everything in a temporary directory: the fake model server, its own embedded Redis,
a SQLite file database seeded through the services, and a node started as `gateway serve` does.
The load generator is `hey` (pinned to one core with taskset when available) or, without it, a
Python aiohttp loop (which tops out far below the gateway: its figures are then a floor, and say
so).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

from gateway_project.cli import serve_argv

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
SLUG = "acme/llama"


@dataclass
class Result:
    """One load run."""

    rps: float
    p50_ms: float
    p99_ms: float
    errors: int


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait_http(url: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(url, timeout=1).status_code < 500:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"{url} did not come up")


@contextmanager
def _process(
    command: list[str], env: dict[str, str], log: Path
) -> Iterator[subprocess.Popen[bytes]]:
    with log.open("wb") as out:
        proc = subprocess.Popen(command, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
        try:
            yield proc
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()


def _env(var_dir: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "DATABASE_URL")}
    env.update(
        GATEWAY_VAR_DIR=str(var_dir),
        DATABASE_URL=f"sqlite:///{var_dir / 'bench.sqlite3'}",
        GATEWAY_UPSTREAM_ALLOWLIST="127.0.0.0/8",
        SECRET_KEY=env.get("SECRET_KEY", "bench-secret-key-not-for-production"),
        GATEWAY_LOG_LEVEL="WARNING",
    )
    return env


def _python(env: dict[str, str], *args: str) -> str:
    done = subprocess.run(
        [sys.executable, *args], cwd=ROOT, env=env, capture_output=True, text=True, check=True
    )
    return done.stdout.strip().splitlines()[-1] if done.stdout.strip() else ""


def _hey(url: str, *, key: str | None, body: dict[str, object], n: int, c: int) -> Result:
    command = ["hey", "-n", str(n), "-c", str(c), "-m", "POST", "-T", "application/json"]
    command += ["-d", json.dumps(body)]
    if key:
        command += ["-H", f"Authorization: Bearer {key}"]
    if shutil.which("taskset"):
        command = ["taskset", "-c", "0", *command]
    out = subprocess.run(command + [url], capture_output=True, text=True, check=True).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    p50 = float(re.search(r"50% in ([\d.]+) secs", out).group(1))  # type: ignore[union-attr]
    p99 = float(re.search(r"99% in ([\d.]+) secs", out).group(1))  # type: ignore[union-attr]
    statuses = re.findall(r"\[(\d+)\]\s+(\d+) responses", out)
    bad = sum(int(count) for status, count in statuses if status != "200")
    errors = out.split("Error distribution:", 1)[1] if "Error distribution:" in out else ""
    bad += sum(int(count) for count in re.findall(r"^\s*\[(\d+)\]", errors, re.M))
    return Result(rps, p50 * 1000, p99 * 1000, bad)


async def _aiohttp_load(
    url: str, key: str | None, body: dict[str, object], n: int, c: int
) -> Result:
    import aiohttp

    headers = {"Authorization": f"Bearer {key}"} if key else {}
    latencies: list[float] = []
    errors = 0
    remaining = iter(range(n))

    async def worker(session: aiohttp.ClientSession) -> None:
        nonlocal errors
        for _ in remaining:
            started = time.perf_counter()
            async with session.post(url, json=body, headers=headers) as response:
                await response.read()
                errors += response.status != 200
            latencies.append((time.perf_counter() - started) * 1000)

    started = time.perf_counter()
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
        await asyncio.gather(*(worker(session) for _ in range(c)))
    elapsed = time.perf_counter() - started
    latencies.sort()
    return Result(
        n / elapsed, latencies[len(latencies) // 2], latencies[int(len(latencies) * 0.99)], errors
    )


def _load(url: str, *, key: str | None, body: dict[str, object], n: int, c: int) -> Result:
    if shutil.which("hey"):
        return _hey(url, key=key, body=body, n=n, c=c)
    return asyncio.run(_aiohttp_load(url, key, body, n, c))


def _run(args: argparse.Namespace, tmp: Path) -> list[tuple[str, str, Result, Result]]:
    env = _env(tmp)
    _python(env, "-m", "gateway_project.embedded_redis", "start")
    fake_port, gw_port = _free_port(), _free_port()
    fake = [
        sys.executable,
        "-m",
        "tests.fakes.model_server",
        "--port",
        str(fake_port),
        "--no-record",
    ]
    gunicorn = [
        *serve_argv(workers=args.workers, bind=f"127.0.0.1:{gw_port}"),
        *("--log-level", "warning"),
    ]
    try:
        with _process(fake, env, tmp / "fake.log"), _process(gunicorn, env, tmp / "gunicorn.log"):
            direct_root = f"http://127.0.0.1:{fake_port}"
            _wait_http(f"{direct_root}/healthz")
            seeded = json.loads(
                _python(env, "-m", "tests.proxy.seed", "create", f"{direct_root}/v1")
            )
            gw_root = f"http://127.0.0.1:{gw_port}"
            _wait_http(f"{gw_root}/healthz")
            return _scenarios(
                args,
                f"{direct_root}/v1/chat/completions",
                f"{gw_root}/v1/chat/completions",
                seeded["key"],
            )
    finally:
        _python(env, "-m", "gateway_project.embedded_redis", "stop")


def _scenarios(
    args: argparse.Namespace, direct: str, gateway: str, key: str
) -> list[tuple[str, str, Result, Result]]:
    messages = [{"role": "user", "content": "benchmark the gateway please"}]
    json_body: dict[str, object] = {"messages": messages, "max_tokens": 16}
    stream_body: dict[str, object] = {**json_body, "stream": True}
    rows = []
    for label, body in (("json", json_body), ("stream", stream_body)):
        for concurrency, n in ((1, args.n1), (64, args.n64)):
            _load(
                gateway, key=key, body={**body, "model": SLUG}, n=min(n, 200), c=concurrency
            )  # warm
            d = _load(direct, key=None, body={**body, "model": "fake-model"}, n=n, c=concurrency)
            g = _load(gateway, key=key, body={**body, "model": SLUG}, n=n, c=concurrency)
            rows.append((label, f"c{concurrency}", d, g))
    return rows


def _print(rows: list[tuple[str, str, Result, Result]], tool: str, workers: int) -> None:
    print(
        f"\nbench-quick: load by {tool}; gateway = `gateway serve`, {workers} workers; "
        "fake upstream (16 tokens); loopback"
    )
    head = f"{'body':<7}{'conc':<6}{'direct rps':>11}{'gw rps':>9}{'direct p50':>12}{'gw p50':>9}"
    head += f"{'added p50':>11}{'gw p99':>9}{'errors':>8}"
    print(head)
    for label, conc, d, g in rows:
        print(
            f"{label:<7}{conc:<6}{d.rps:>11.0f}{g.rps:>9.0f}{d.p50_ms:>10.2f}ms{g.p50_ms:>7.2f}ms"
            f"{g.p50_ms - d.p50_ms:>9.2f}ms{g.p99_ms:>7.1f}ms{g.errors:>8}"
        )


def main() -> None:
    """Entry point."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--n1", type=int, default=2000, help="requests at concurrency 1")
    parser.add_argument("--n64", type=int, default=20000, help="requests at concurrency 64")
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="gw-bench-"))
    try:
        rows = _run(args, tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    tool = "hey pinned to core 0 (taskset)" if shutil.which("hey") else "python aiohttp loop"
    _print(rows, tool, args.workers)


if __name__ == "__main__":
    main()
