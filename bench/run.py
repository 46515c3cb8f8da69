"""`make bench`: direct, a Python floor, ours, Portkey and LiteLLM against the fake upstream.

Usage: .venv/bin/python -m bench.run [--duration 6]
       [--systems direct,floor,floor_redis,gateway,portkey,litellm]
Writes bench/results/latest.json, latest.md and latency.png and refreshes bench/README.md.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

from bench import floor, gateway, peers
from bench.load import (
    INSTALL_HINT,
    LoadResult,
    cpu_busy_percent,
    load_run,
    load_tool,
    pin_description,
    tree_rss_mb,
)
from bench.peers import BENCH_DIR, Proc, System, Unavailable
from bench.report import SYSTEMS, RunRecord, machine_describe, markdown, write_all

# (name, concurrency, stream, slow upstream = one-second streams)
SCENARIOS = [
    ("c1_json", 1, False, False),
    ("c32_json", 32, False, False),
    ("c128_json", 128, False, False),
    ("c32_stream", 32, True, False),
    ("c128_stream", 128, True, False),
    ("c300_long_stream", 300, True, True),
]
LONG_STREAM_MIN_S = 10.0  # one-second streams: at least ten rounds per connection
PROMPT = "Benchmark prompt: reply with twenty tokens please."


def _args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=6.0, help="seconds per scenario")
    parser.add_argument("--warmup", type=float, default=1.5, help="seconds before each scenario")
    parser.add_argument(
        "--system-warmup",
        type=float,
        default=5.0,
        help="seconds of JSON, then of streaming, "
        "at 32 concurrent before a system's first scenario (Node's JIT needs ~10 s)",
    )
    parser.add_argument(
        "--tool", choices=("wrk", "hey"), help="default: wrk if installed, else hey"
    )
    parser.add_argument("--systems", default=",".join(SYSTEMS), help="comma-separated subset")
    parser.add_argument("--out", type=Path, default=BENCH_DIR / "results")
    parser.add_argument("--keep-tmp", action="store_true", help="keep logs and data in /tmp")
    return parser.parse_args(argv)


def body_file(tmp: Path, model: str, *, stream: bool) -> Path:
    """Write the chat-completion request body for `model` and return its path."""
    path = tmp / "bodies" / f"{model.replace('/', '_')}-{'stream' if stream else 'json'}.json"
    path.parent.mkdir(exist_ok=True)
    body = {"model": model, "messages": [{"role": "user", "content": PROMPT}], "max_tokens": 20}
    if stream:
        body["stream"] = True
    path.write_text(json.dumps(body))
    return path


def _start(name: str, *, logs: Path, tmp: Path, fakes: tuple[Proc, Proc, int, int]) -> System:
    fast, slow, fast_port, slow_port = fakes
    if name == "direct":
        return peers.direct_system(fast_port=fast_port, slow_port=slow_port, procs=[fast, slow])
    if name in ("floor", "floor_redis"):
        return floor.floor_system(name, logs=logs, fast_port=fast_port, slow_port=slow_port)
    if name == "gateway":
        return gateway.gateway_start(logs=logs, tmp=tmp, fast_port=fast_port, slow_port=slow_port)
    if name == "portkey":
        return peers.portkey_start(logs=logs, fast_port=fast_port, slow_port=slow_port)
    return peers.litellm_start(logs=logs, tmp=tmp, fast_port=fast_port, slow_port=slow_port)


def _drive(
    system: System,
    *,
    tool: str,
    tmp: Path,
    concurrency: int,
    stream: bool,
    slow: bool,
    seconds: float,
) -> LoadResult:
    url, headers, model = system.target(slow=slow)
    body = body_file(tmp, model, stream=stream)
    return load_run(
        tool=tool,
        url=url,
        body=body,
        headers=headers,
        concurrency=concurrency,
        duration_s=seconds,
        timeout_s=30.0,
    )


def _rss(system: System) -> dict[str, float]:
    """RSS of the system's own server (for direct: the fast fake server)."""
    return tree_rss_mb(system.procs[0]) if system.procs else {}


def _measure(
    system: System, *, tool: str, tmp: Path, args: argparse.Namespace, record: RunRecord
) -> None:
    name = system.name
    record.rss[name] = {"start": _rss(system)}
    sent = 0
    for stream in (False, True):  # warm-up: connections, caches, JIT
        sent += _drive(
            system,
            tool=tool,
            tmp=tmp,
            concurrency=32,
            stream=stream,
            slow=False,
            seconds=args.system_warmup,
        ).requests
    record.rss[name]["warm"] = _rss(system)
    for scenario, concurrency, stream, slow in SCENARIOS:
        if not _alive(system):
            record.missing[name] = f"process died during the run: {system.procs[0].log_tail()}"
            return
        warm = args.warmup * (2 if slow else 1)
        sent += _drive(
            system,
            tool=tool,
            tmp=tmp,
            concurrency=concurrency,
            stream=stream,
            slow=slow,
            seconds=warm,
        ).requests
        result = _drive(
            system,
            tool=tool,
            tmp=tmp,
            concurrency=concurrency,
            stream=stream,
            slow=slow,
            seconds=max(args.duration, LONG_STREAM_MIN_S) if slow else args.duration,
        )
        sent += result.requests
        record.results.setdefault(scenario, {})[name] = result
        _drain(system)
        extra = f"  errors={result.errors} {result.detail}" if result.errors else ""
        print(
            f"  {name:8} {scenario:17} {result.rps:9.1f} req/s  p50 {result.p50_ms:9.2f} ms"
            f"  p99 {result.p99_ms:9.2f} ms{extra}",
            flush=True,
        )
    record.rss[name]["end"] = _rss(system)
    record.requests[name] = sent


def _quiet_wait(*, limit: float = 15.0, patience_s: float = 30.0) -> float | None:
    """Wait (bounded) for other work on the machine to calm down; return the last busy %."""
    deadline = time.monotonic() + patience_s
    busy = cpu_busy_percent()
    while busy is not None and busy > limit and time.monotonic() < deadline:
        busy = cpu_busy_percent()
    return busy


def _drain(system: System, *, limit: float = 10.0, patience_s: float = 30.0) -> None:
    """Let abandoned in-flight work finish (bounded) so it does not slow the next scenario."""
    import psutil

    deadline = time.monotonic() + patience_s
    while time.monotonic() < deadline:
        members = []
        for proc in system.procs:
            try:
                root = psutil.Process(proc.popen.pid)
                members += [root, *root.children(recursive=True)]
            except psutil.Error:
                continue
        for member in members:
            try:
                member.cpu_percent(None)
            except psutil.Error:
                pass
        time.sleep(0.5)
        total = 0.0
        for member in members:
            try:
                total += member.cpu_percent(None)
            except psutil.Error:
                pass
        if total < limit:
            return


def _alive(system: System) -> bool:
    return all(proc.alive() for proc in system.procs)


def _stop(system: System, *, keep: set[int]) -> None:
    for proc in system.procs:
        if proc.popen.pid not in keep:
            peers.proc_stop(proc)
    if system.name == "gateway":
        gateway.gateway_stop_extras(system)


def _one_system(
    name: str,
    *,
    tool: str,
    logs: Path,
    tmp: Path,
    fakes: tuple,
    args: argparse.Namespace,
    record: RunRecord,
) -> None:
    print(f"[{name}] starting …", flush=True)
    started = time.monotonic()
    try:
        system = _start(name, logs=logs, tmp=tmp, fakes=fakes)
    except Exception as exc:  # noqa: BLE001 - any failure to start is reported, never fatal
        reason = str(exc) if isinstance(exc, Unavailable) else f"{type(exc).__name__}: {exc}"
        record.missing[name] = reason
        print(f"[{name}] not available: {reason}", flush=True)
        return
    record.notes[name] = system.notes
    busy = _quiet_wait()
    if busy is not None:
        record.background[name] = busy
    print(
        f"[{name}] up in {time.monotonic() - started:.0f}s; machine busy {busy or 0:.0f}% "
        "while idle; measuring",
        flush=True,
    )
    try:
        _measure(system, tool=tool, tmp=tmp, args=args, record=record)
        if name in ("gateway", "floor_redis"):
            count = gateway.usage_events_count if name == "gateway" else floor.usage_entries_count
            events = count(system)
            record.notes[name].append(
                f"{events} usage events in the Redis stream at the end"
                if events is not None
                else "usage stream unreadable"
            )
    finally:
        _stop(system, keep={fakes[0].popen.pid, fakes[1].popen.pid})


def main(argv: list[str] | None = None) -> int:
    """Run every system through every scenario and write the report."""
    args = _args(argv)
    tool = args.tool or load_tool()
    if tool and not shutil.which(tool):
        tool = None
    if tool is None:
        print(f"make bench needs wrk or hey on PATH. Install them with:\n  {INSTALL_HINT}")
        return 2
    chosen = [s.strip() for s in args.systems.split(",") if s.strip()]
    unknown = set(chosen) - set(SYSTEMS)
    if unknown:
        print(f"unknown systems: {', '.join(sorted(unknown))} (choose from {', '.join(SYSTEMS)})")
        return 2
    tmp = Path(tempfile.mkdtemp(prefix="gw-bench-"))
    logs = tmp / "logs"
    logs.mkdir()
    threads = "1 thread" if tool == "wrk" else "one Go process"
    load = f"{tool}, {threads}, pinned with {pin_description()}"
    when = dt.datetime.now(dt.UTC).astimezone().isoformat(timespec="seconds")
    record = RunRecord(
        machine=machine_describe(),
        when=when,
        load=load,
        duration_s=args.duration,
        scenarios=SCENARIOS,
    )
    print(f"bench: {record.machine}\nbench: load from {load}; logs in {logs}", flush=True)
    fakes = peers.fake_servers_start(logs=logs)
    try:
        for name in SYSTEMS:
            if name in chosen:
                _one_system(
                    name, tool=tool, logs=logs, tmp=tmp, fakes=fakes, args=args, record=record
                )
            else:
                record.missing[name] = "not selected (--systems)"
    except KeyboardInterrupt:
        print("interrupted: writing what was measured", flush=True)
    finally:
        peers.proc_stop(fakes[0])
        peers.proc_stop(fakes[1])
    written = write_all(record, args.out)
    print("\n" + markdown(record))
    print("written: " + ", ".join(written))
    if not args.keep_tmp and not record.missing:
        shutil.rmtree(tmp, ignore_errors=True)
    else:
        print(f"logs kept in {logs}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
