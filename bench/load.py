"""The load generator: wrk (preferred) or hey, pinned to one core with taskset, parsed."""

from __future__ import annotations

import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from bench.peers import BENCH_DIR, Proc, priority_prefix

LOAD_CORE = "1"  # the load generator's core; the servers under test may use any core
WRK_SCRIPT = BENCH_DIR / "post.lua"
_WRK_LINE = re.compile(r"BENCH_RESULT (.*)")
INSTALL_HINT = "apt-get update && apt-get install -y wrk hey"


@dataclass(frozen=True)
class LoadResult:
    """One measured run: completed requests per second, full-response latency, errors."""

    requests: int
    rps: float
    p50_ms: float
    p99_ms: float
    errors: int
    detail: str = ""

    def as_json(self) -> dict[str, float | int]:
        """The latest.json shape of one system in one scenario."""
        return {
            "rps": round(self.rps, 1),
            "p50_ms": round(self.p50_ms, 3),
            "p99_ms": round(self.p99_ms, 3),
            "errors": self.errors,
        }


def load_tool() -> str | None:
    """'wrk' or 'hey', whichever is installed (wrk first), or None."""
    for tool in ("wrk", "hey"):
        if shutil.which(tool):
            return tool
    return None


def pin_prefix() -> list[str]:
    """`taskset -c 1` when both taskset and a second core exist, else nothing."""
    import os

    if shutil.which("taskset") and (os.cpu_count() or 1) > 1:
        return ["taskset", "-c", LOAD_CORE]
    return []


def pin_description() -> str:
    """How the load generator is pinned, for the report."""
    prefix = pin_prefix()
    pinned = " ".join(prefix) if prefix else "not pinned (no taskset or a single core)"
    nice = " ".join(priority_prefix())
    return f"`{pinned}`" + (f", servers and load at `{nice}`" if nice else "")


def load_run(
    *,
    tool: str,
    url: str,
    body: Path,
    headers: list[str],
    concurrency: int,
    duration_s: float,
    timeout_s: float = 30.0,
) -> LoadResult:
    """Drive `url` with POSTs of `body` at fixed concurrency for `duration_s` seconds."""
    if tool == "wrk":
        return _wrk(url, body, headers, concurrency, duration_s, timeout_s)
    return _hey(url, body, headers, concurrency, duration_s, timeout_s)


def _wrk(
    url: str, body: Path, headers: list[str], concurrency: int, duration_s: float, timeout_s: float
) -> LoadResult:
    args = [
        *priority_prefix(),
        *pin_prefix(),
        "wrk",
        "-t1",
        f"-c{concurrency}",
        f"-d{duration_s:g}s",
        f"--timeout={timeout_s:g}s",
        "-s",
        str(WRK_SCRIPT),
        url,
        "--",
        str(body),
        *headers,
    ]
    out = _run(args, duration_s + timeout_s + 30)
    match = _WRK_LINE.search(out)
    if not match:
        return LoadResult(0, 0.0, 0.0, 0.0, 1, f"wrk printed no result: {out[-300:]!r}")
    fields = dict(part.split("=", 1) for part in match.group(1).split())
    requests = int(fields["requests"])
    seconds = int(fields["duration_us"]) / 1e6
    errors = sum(int(fields[k]) for k in ("connect", "read", "write", "status", "timeout"))
    detail = " ".join(
        f"{k}={fields[k]}"
        for k in ("connect", "read", "write", "status", "timeout")
        if fields[k] != "0"
    )
    return LoadResult(
        requests,
        requests / seconds if seconds else 0.0,
        int(fields["p50_us"]) / 1000,
        int(fields["p99_us"]) / 1000,
        errors,
        detail,
    )


def _hey(
    url: str, body: Path, headers: list[str], concurrency: int, duration_s: float, timeout_s: float
) -> LoadResult:
    args = [
        *priority_prefix(),
        *pin_prefix(),
        "hey",
        "-z",
        f"{duration_s:g}s",
        "-c",
        str(concurrency),
        "-m",
        "POST",
        "-T",
        "application/json",
        "-D",
        str(body),
        "-t",
        f"{int(timeout_s)}",
        "-o",
        "csv",
    ]
    for header in headers:
        args += ["-H", header]
    out = _run([*args, url], duration_s + timeout_s + 30)
    times, errors, codes = [], 0, {}
    for line in out.splitlines()[1:]:
        parts = line.split(",")
        if len(parts) < 8:
            continue
        status = parts[6]
        codes[status] = codes.get(status, 0) + 1
        if status.startswith("2"):
            times.append(float(parts[0]) * 1000)
        else:
            errors += 1
    # response-time (col 0) + offset (col 7): when each request ended; the last one ends the run
    ends = [
        float(p.split(",")[0]) + float(p.split(",")[7])
        for p in out.splitlines()[1:]
        if p.count(",") >= 7
    ]
    span = max(ends) if ends else duration_s
    times.sort()
    detail = " ".join(f"{k}={v}" for k, v in sorted(codes.items()) if not k.startswith("2"))
    return LoadResult(
        len(times),
        len(times) / max(span, duration_s * 0.5),
        _pct(times, 50),
        _pct(times, 99),
        errors,
        detail,
    )


def _pct(sorted_ms: list[float], pct: float) -> float:
    if not sorted_ms:
        return 0.0
    index = min(len(sorted_ms) - 1, max(0, round(pct / 100 * len(sorted_ms) + 0.5) - 1))
    return sorted_ms[index]


def _run(args: list[str], timeout: float) -> str:
    try:
        done = subprocess.run(args, capture_output=True, text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired as exc:
        return f"timed out: {exc}"
    return done.stdout + done.stderr


def cpu_busy_percent(seconds: float = 1.0) -> float | None:
    """Share of all cores busy over `seconds` (other work on the machine skews every figure)."""
    import time

    def sample() -> tuple[int, int]:
        with open("/proc/stat") as stat:
            values = [int(v) for v in stat.readline().split()[1:]]
        idle = values[3] + values[4]  # idle + iowait
        return sum(values) - idle, sum(values)

    try:
        busy0, total0 = sample()
        time.sleep(seconds)
        busy1, total1 = sample()
    except (OSError, ValueError, IndexError):
        return None
    return 100.0 * (busy1 - busy0) / max(1, total1 - total0)


def tree_rss_mb(proc: Proc) -> dict[str, float]:
    """RSS in MB of a process and of each of its descendants (by pid), via psutil."""
    import psutil

    try:
        root = psutil.Process(proc.popen.pid)
        members = [root, *root.children(recursive=True)]
    except psutil.Error:
        return {}
    out: dict[str, float] = {}
    for member in members:
        try:
            out[str(member.pid)] = member.memory_info().rss / 1e6
        except psutil.Error:
            continue
    return out
