"""`make bench-profile`: where a gateway worker's CPU goes, per request, under load.

Starts what `make bench` measures (a node as `gateway serve` runs it, a federated key whose group
has a REQUEST/MINUTE and a TOKEN/DAY limit, usage events recorded, a log line per request at the
default INFO level), in a temporary directory with a SQLite file and its own embedded Redis so
nothing else on the machine is touched. Then, per
scenario (JSON and a 20-chunk stream), it drives load with `hey` (pinned to one core with taskset
when available) while py-spy samples one worker without pausing it, and prints:

- us/request: the CPU time all gateway workers spent (from /proc) divided by the requests served,
  the figure to compare before and after a change on a noisy machine, and the same net of what the
  workers burn idle (sampled just before the load);
- the frames holding most of the sampled worker's time, by own time and by total time, with each
  one's us/request (its share of that worker's CPU over the requests that worker served).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from bench.gateway import SLUGS, manage_run
from bench.peers import (
    HOST,
    Proc,
    fake_servers_start,
    free_port,
    http_ready,
    proc_spawn,
    proc_stop,
)
from gateway_project.cli import serve_argv

BIN = Path(sys.executable).parent
TICKS = os.sysconf("SC_CLK_TCK")
IDLE_FRAMES = ("run_forever", "_run_once", "select (selectors.py", "poll (")
# "Total time" lists the project's own frames: the server's outer frames hold every sample.
OWN_CODE = ("(routing/", "(billing/", "(gateway_project/", "(keys/", "(groups/")


@dataclass
class Load:
    """One load run."""

    requests: int
    rps: float
    p50_ms: float
    errors: int


def _env(tmp: Path, *, log_level: str) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("DATABASE_URL", "REDIS_URL", "GATEWAY_LIMITS_REDIS_URL")
    }
    return env | {
        "GATEWAY_VAR_DIR": str(tmp / "var"),
        "DATABASE_URL": f"sqlite:///{tmp / 'profile.sqlite3'}",
        "GATEWAY_UPSTREAM_ALLOWLIST": "127.0.0.0/8",
        "SECRET_KEY": "bench-secret-key-not-for-production-4c7d1e",
        "DJANGO_SETTINGS_MODULE": "gateway_project.settings",
        "GATEWAY_LOG_LEVEL": log_level,
    }


def _children(pid: int) -> list[int]:
    found = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        text = (task / "children").read_text().split()
        found += [int(child) for child in text]
    return found


def _workers(master: Proc) -> list[int]:
    """The gunicorn workers (the master may sit under `nice`)."""
    pids = [master.popen.pid]
    for _ in range(3):
        kids = [kid for pid in pids for kid in _children(pid)]
        if not kids:
            return pids
        pids = kids
        if all("gunicorn" in Path(f"/proc/{pid}/cmdline").read_text() for pid in pids):
            workers = [kid for pid in pids for kid in _children(pid)]
            if workers:
                return workers
    return pids


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def _idle_cpu(workers: list[int], *, seconds: float) -> float:
    """CPU seconds per second all workers spend with no request in flight."""
    if seconds <= 0:
        return 0.0
    before = sum(_cpu_seconds(pid) for pid in workers)
    time.sleep(seconds)
    return (sum(_cpu_seconds(pid) for pid in workers) - before) / seconds


def _hey(url: str, *, key: str, body: dict[str, object], seconds: float, c: int) -> Load:
    command = ["hey", "-z", f"{seconds}s", "-c", str(c), "-m", "POST", "-T", "application/json"]
    command += ["-d", json.dumps(body), "-H", f"Authorization: Bearer {key}", url]
    if shutil.which("taskset"):
        command = ["taskset", "-c", "0", *command]
    out = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    statuses = {int(s): int(n) for s, n in re.findall(r"\[(\d+)\]\s+(\d+) responses", out)}
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    p50 = float(re.search(r"50% in ([\d.]+) secs", out).group(1))  # type: ignore[union-attr]
    errors = out.split("Error distribution:", 1)[1] if "Error distribution:" in out else ""
    failed = sum(int(n) for n in re.findall(r"^\s*\[(\d+)\]", errors, re.M))
    ok = statuses.get(200, 0)
    return Load(ok, rps, p50 * 1000, sum(statuses.values()) - ok + failed)


def _frames(raw: Path) -> tuple[Counter[str], Counter[str], int]:
    """Own and total samples per frame of a py-spy raw (collapsed) profile, and the busy samples."""
    own: Counter[str] = Counter()
    total: Counter[str] = Counter()
    busy = 0
    for line in raw.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        frames = [frame for frame in stack.split(";") if not frame.startswith("process ")]
        frames = [frame for frame in frames if not frame.startswith("thread ")]
        if not frames or any(idle in frames[-1] for idle in IDLE_FRAMES):
            continue
        count = int(count_text)
        busy += count
        own[frames[-1]] += count
        for frame in set(frames):
            if any(part in frame for part in OWN_CODE):
                total[frame] += count
    return own, total, busy


def _scenario(
    name: str,
    *,
    url: str,
    key: str,
    body: dict[str, object],
    workers: list[int],
    args: argparse.Namespace,
    tmp: Path,
) -> None:
    _hey(url, key=key, body=body, seconds=2, c=args.concurrency)  # warm every worker
    raw = tmp / f"{name}.txt"
    spy = subprocess.Popen(
        [str(BIN / "py-spy"), "record", "--pid", str(workers[0]), "--rate", str(args.rate)]
        + ["--duration", str(args.seconds), "--format", "raw", "--nonblocking"]
        + ["--output", str(raw)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    time.sleep(0.5)  # py-spy attached before the load starts
    idle = _idle_cpu(workers, seconds=args.idle_seconds)
    before = {pid: _cpu_seconds(pid) for pid in workers}
    started = time.monotonic()
    load = _hey(url, key=key, body=body, seconds=args.seconds, c=args.concurrency)
    elapsed = time.monotonic() - started
    cpu = {pid: _cpu_seconds(pid) - before[pid] for pid in workers}
    _, spy_err = spy.communicate(timeout=args.seconds + 30)
    per_request = sum(cpu.values()) / max(load.requests, 1) * 1e6
    # What the workers burn with no request at all (background loops), taken out: on a loaded
    # machine fewer requests get through and that share would swamp the figure.
    net = max(sum(cpu.values()) - idle * elapsed, 0) / max(load.requests, 1) * 1e6
    print(f"\n== {name}: c{args.concurrency}, {args.seconds:g} s, {len(workers)} workers")
    print(
        f"   {load.requests} requests ({load.errors} errors), {load.rps:.0f} req/s, "
        f"p50 {load.p50_ms:.2f} ms; gateway CPU {per_request:.0f} us/request "
        f"({net:.0f} net of the idle workers' {idle * 100:.1f}% of a core)"
    )
    if not raw.exists():
        print(f"   no profile: {spy_err.decode(errors='replace').strip()[-300:]}")
        return
    own, total, busy = _frames(raw)
    # The sampled worker's share of the requests, in proportion to its share of the CPU.
    share = cpu[workers[0]] / max(sum(cpu.values()), 1e-9)
    us_per_sample = cpu[workers[0]] * 1e6 / max(busy, 1) / max(load.requests * share, 1)
    for title, counts in (("own time", own), ("total time, project frames", total)):
        print(f"   top frames by {title} (us/request, share of the worker's busy samples):")
        for frame, count in counts.most_common(args.top):
            print(f"   {count * us_per_sample:8.1f} {count / max(busy, 1):6.1%}  {frame[:150]}")


def main() -> None:
    """Entry point."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--rate", type=int, default=250, help="py-spy samples per second")
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument(
        "--idle-seconds", type=float, default=3, help="idle CPU sampled before each load (0: off)"
    )
    parser.add_argument("--only", choices=("json", "stream"), default=None)
    parser.add_argument(
        "--log-level",
        default="INFO",
        help="the gateway's GATEWAY_LOG_LEVEL (INFO, as make bench runs it: a line per request)",
    )
    args = parser.parse_args()
    if not shutil.which("hey"):
        sys.exit("bench-profile needs `hey` (apt-get install hey)")
    tmp = Path(tempfile.mkdtemp(prefix="gw-profile-"))
    env = _env(tmp, log_level=args.log_level)
    procs: list[Proc] = []
    try:
        manage_run(env, ["-m", "gateway_project.embedded_redis", "start"], what="embedded Redis")
        manage_run(env, ["manage.py", "migrate", "--noinput"], what="migrate")
        fast, slow, fast_port, slow_port = fake_servers_start(logs=tmp)
        procs += [fast, slow]
        out = manage_run(
            env,
            ["-m", "bench.gateway", "setup"]
            + [f"http://{HOST}:{fast_port}/v1", f"http://{HOST}:{slow_port}/v1"],
            what="bench data setup",
        )
        key = json.loads(out.strip().splitlines()[-1])["key"]
        port = free_port()
        gateway = proc_spawn(
            "gateway", serve_argv(workers=args.workers, bind=f"{HOST}:{port}"), logs=tmp, env=env
        )
        procs.append(gateway)
        http_ready(f"http://{HOST}:{port}/healthz", proc=gateway, timeout=60)
        workers = _workers(gateway)
        url = f"http://{HOST}:{port}/v1/chat/completions"
        messages = [{"role": "user", "content": "profile the gateway please"}]
        body: dict[str, object] = {"model": SLUGS["fast"], "messages": messages, "max_tokens": 20}
        for name, scenario in (("json", body), ("stream", {**body, "stream": True})):
            if args.only in (None, name):
                _scenario(
                    name, url=url, key=key, body=scenario, workers=workers, args=args, tmp=tmp
                )
    finally:
        for proc in reversed(procs):
            proc_stop(proc)
        manage_run(env, ["-m", "gateway_project.embedded_redis", "stop"], what="embedded Redis")
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
