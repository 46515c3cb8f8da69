"""RSS soak: the gateway's per-worker memory over N requests (the issue's goal: flat within +-10%).

Usage: .venv/bin/python -m bench.soak [--requests 100000] [--max-seconds 900]
Alternates 10 s of 64-concurrent JSON and streaming load through the real key, samples each
worker's RSS after every round, writes bench/results/soak.md and prints it.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

from bench import gateway, peers
from bench.load import INSTALL_HINT, load_run, load_tool, pin_description, tree_rss_mb
from bench.peers import BENCH_DIR, Unavailable
from bench.run import body_file

ROUND_S = 10.0
CONCURRENCY = 64


def _workers_rss(system: peers.System) -> dict[str, float]:
    tree = tree_rss_mb(system.procs[0])
    master = next(iter(tree), None)
    return {pid: mb for pid, mb in tree.items() if pid != master}


def _report(samples: list[tuple[int, dict[str, float]]], *, load: str, seconds: float) -> str:
    base = samples[0][1]
    pids = sorted(base, key=int)
    lines = [
        "# Gateway RSS soak",
        "",
        f"Load: {load}; {CONCURRENCY} concurrent, JSON and streaming alternating every "
        f"{ROUND_S:g} s, {seconds:.0f} s in all.",
        "",
        "| requests after warm-up | " + " | ".join(f"worker {p} MB" for p in pids) + " |",
        "|---|" + "---|" * len(pids),
    ]
    for sent, rss in samples:
        cells = [f"{rss.get(p, 0):.1f}" for p in pids]
        lines.append(f"| {sent:,} | " + " | ".join(cells) + " |")
    last = samples[-1][1]
    changes = [(last.get(p, 0) / base[p] - 1) * 100 for p in pids if base[p]]
    worst = max(changes, key=abs) if changes else 0.0
    verdict = "flat (within ±10%)" if abs(worst) <= 10 else "NOT flat (beyond ±10%)"
    lines += ["", f"Largest per-worker change: {worst:+.1f}% → {verdict}."]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    """Start the gateway as `make bench` does, drive it for N requests, report RSS per worker."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=100_000)
    parser.add_argument("--max-seconds", type=float, default=900.0)
    parser.add_argument("--out", type=Path, default=BENCH_DIR / "results")
    args = parser.parse_args(argv)
    tool = load_tool()
    if tool is None:
        print(f"bench.soak needs wrk or hey on PATH. Install them with:\n  {INSTALL_HINT}")
        return 2
    tmp = Path(tempfile.mkdtemp(prefix="gw-soak-"))
    logs = tmp / "logs"
    logs.mkdir()
    fast, slow, fast_port, slow_port = peers.fake_servers_start(logs=logs)
    system = None
    try:
        system = gateway.gateway_start(logs=logs, tmp=tmp, fast_port=fast_port, slow_port=slow_port)
        url, headers, model = system.target(slow=False)
        bodies = [body_file(tmp, model, stream=False), body_file(tmp, model, stream=True)]
        for body in bodies:  # warm-up
            load_run(
                tool=tool,
                url=url,
                body=body,
                headers=headers,
                concurrency=CONCURRENCY,
                duration_s=3,
            )
        samples, sent, errors = [(0, _workers_rss(system))], 0, 0
        started = time.monotonic()
        while sent < args.requests and time.monotonic() - started < args.max_seconds:
            body = bodies[len(samples) % 2]
            result = load_run(
                tool=tool,
                url=url,
                body=body,
                headers=headers,
                concurrency=CONCURRENCY,
                duration_s=ROUND_S,
            )
            sent, errors = sent + result.requests, errors + result.errors
            samples.append((sent, _workers_rss(system)))
            print(
                f"  {sent:>8,} requests  errors {errors}  RSS "
                + ", ".join(f"{mb:.1f}" for mb in samples[-1][1].values())
                + " MB",
                flush=True,
            )
        text = _report(
            samples,
            load=f"{tool} pinned with {pin_description()}",
            seconds=time.monotonic() - started,
        )
        text += f"\nErrors: {errors}.\n" if errors else ""
    except Unavailable as exc:
        text = f"# Gateway RSS soak\n\ngateway: not available ({exc})\n"
    finally:
        if system is not None:
            peers.proc_stop(system.procs[0])
            gateway.gateway_stop_extras(system)
        peers.proc_stop(fast)
        peers.proc_stop(slow)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "soak.md").write_text(text)
    print("\n" + text)
    shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
