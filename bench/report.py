"""Bench output: latest.json, the markdown table with ratios, the chart, the README block."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

from bench.load import LoadResult
from bench.peers import BENCH_DIR, PEERS_DIR

SYSTEMS = ("direct", "floor", "floor_redis", "gateway", "portkey", "litellm")
LABELS = {
    "direct": "direct",
    "floor": "floor",
    "floor_redis": "floor_redis",
    "gateway": "ours",
    "portkey": "Portkey",
    "litellm": "LiteLLM",
}
RATIO_PEERS = ("floor_redis", "portkey", "litellm", "direct")  # the ours/X columns, in order
MATPLOTLIB_PIN = "matplotlib==3.11.2"
README_BEGIN, README_END = "<!-- bench:latest -->", "<!-- /bench:latest -->"
SUMMARY_MARKERS = ("<!-- bench:summary -->", "<!-- /bench:summary -->")


@dataclass
class RunRecord:
    """Everything one `make bench` run measured and how."""

    machine: str
    when: str
    load: str
    duration_s: float
    scenarios: list[tuple[str, int, bool, bool]]  # (name, concurrency, stream, slow)
    results: dict[str, dict[str, LoadResult]] = field(default_factory=dict)
    missing: dict[str, str] = field(default_factory=dict)  # system -> reason
    notes: dict[str, list[str]] = field(default_factory=dict)
    rss: dict[str, dict[str, dict[str, float]]] = field(default_factory=dict)  # system->phase->pid
    requests: dict[str, int] = field(default_factory=dict)  # total requests sent per system
    background: dict[str, float] = field(default_factory=dict)  # % CPU busy before measuring


def machine_describe() -> str:
    """CPU model, cores, memory, OS, Python: what 'this machine' was."""
    cpu = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
        mem_kb = next(
            int(line.split()[1])
            for line in Path("/proc/meminfo").read_text().splitlines()
            if line.startswith("MemTotal")
        )
        mem = f"{mem_kb / 1024 / 1024:.0f} GiB"
    except (OSError, StopIteration, ValueError):
        mem = "? GiB"
    return (
        f"{cpu}, {os.cpu_count()} cores, {mem} RAM, {platform.system()} "
        f"{platform.release()}, Python {platform.python_version()}"
    )


def results_json(record: RunRecord) -> dict:
    """The latest.json document, shaped exactly as the issue asks."""
    return {
        "machine": record.machine,
        "when": record.when,
        "scenarios": {
            name: {system: result.as_json() for system, result in by_system.items()}
            for name, by_system in record.results.items()
        },
    }


def _ratio(ours: float | None, peer: float | None) -> str:
    if not ours or not peer:
        return "—"
    return f"{ours / peer:.2f}×"


def _cell(value: float | None, digits: int) -> str:
    return "—" if value is None else f"{value:,.{digits}f}"


def _value(record: RunRecord, scenario: str, system: str, metric: str) -> float | None:
    result = record.results.get(scenario, {}).get(system)
    if result is None or (result.requests == 0 and metric != "rps"):
        return None
    return getattr(result, metric)


def added_p50_ms(record: RunRecord, system: str) -> float | None:
    """What `system` adds to the direct p50 at concurrency 1 (None when either is missing)."""
    direct = _value(record, "c1_json", "direct", "p50_ms")
    value = _value(record, "c1_json", system, "p50_ms")
    return None if direct is None or value is None else value - direct


def floor_ratio(record: RunRecord, scenario: str) -> float | None:
    """Our req/s as a fraction of floor_redis's in `scenario` (None when either is missing)."""
    ours = _value(record, scenario, "gateway", "rps")
    floor = _value(record, scenario, "floor_redis", "rps")
    return ours / floor if ours and floor else None


def _row(label: str, values: dict[str, float | None], digits: int, ratios: bool) -> str:
    cells = [_cell(values[s], digits) for s in SYSTEMS]
    ours = values["gateway"]
    peers = [_ratio(ours, values[s]) if ratios else "—" for s in RATIO_PEERS]
    return f"| {label} | " + " | ".join(cells + peers) + " |"


def _scenario_rows(record: RunRecord, name: str) -> list[str]:
    metrics = (("req/s", "rps", 0), ("p50 ms", "p50_ms", 2), ("p99 ms", "p99_ms", 2))
    rows = []
    for label, metric, digits in metrics:
        values = {s: _value(record, name, s, metric) for s in SYSTEMS}
        rows.append(_row(f"{name} {label}", values, digits, ratios=True))
    if name == "c1_json":
        direct = {m: _value(record, name, "direct", m) for m in ("p50_ms", "p99_ms")}
        for metric in ("p50_ms", "p99_ms"):
            added = {
                s: (
                    None
                    if direct[metric] is None or _value(record, name, s, metric) is None
                    else _value(record, name, s, metric) - direct[metric]
                )
                for s in SYSTEMS
            }
            added["direct"] = None
            label = f"c1_json added {metric.split('_')[0]} ms vs direct"
            rows.append(_row(label, added, 2, ratios=False))
    errors = {
        s: (float(r.errors) if (r := record.results.get(name, {}).get(s)) else None)
        for s in SYSTEMS
    }
    if any(errors.values()):
        rows.append(_row(f"{name} errors", errors, 0, ratios=False))
    return rows


def _added_sentence(record: RunRecord) -> str:
    """Added p50 at concurrency 1: ours against direct, against Portkey's and the floor's."""
    added = {s: added_p50_ms(record, s) for s in SYSTEMS if s != "direct"}
    ours, portkey = added["gateway"], added["portkey"]
    versus = "—" if ours is None or portkey is None else f"{ours - portkey:+.2f} ms"
    others = ", ".join(f"{LABELS[s]} {_cell(added[s], 2)} ms" for s in added if s != "gateway")
    return (
        f"Added p50 at concurrency 1 over direct: ours {_cell(ours, 2)} ms ({others}); "
        f"ours minus Portkey's added p50: {versus}."
    )


def _floor_lines(record: RunRecord) -> list[str]:
    """Ours against the floor: req/s of floor, floor_redis and ours, and ours/floor_redis."""
    lines = [
        "| scenario | floor req/s | floor_redis req/s | ours req/s | ours/floor_redis |",
        "|---|---|---|---|---|",
    ]
    for name, *_ in record.scenarios:
        values = [_value(record, name, s, "rps") for s in ("floor", "floor_redis", "gateway")]
        ratio = floor_ratio(record, name)
        cells = [_cell(v, 0) for v in values] + ["—" if ratio is None else f"{ratio:.2f}×"]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return [*lines, "", _added_sentence(record)]


def _rss_lines(record: RunRecord) -> list[str]:
    lines = [
        "| system | RSS at start MB | after warm-up MB | at end MB | requests sent |",
        "|---|---|---|---|---|",
    ]
    for system in SYSTEMS:
        phases = record.rss.get(system)
        if not phases:
            continue
        total = {phase: sum(pids.values()) for phase, pids in phases.items()}
        cells = [f"{total.get(p, 0):.0f}" for p in ("start", "warm", "end")]
        sent = record.requests.get(system, 0)
        lines.append(f"| {system} | " + " | ".join(cells) + f" | {sent:,} |")
    workers = record.rss.get("gateway", {})
    if workers.get("warm") and workers.get("end"):
        master = next(iter(workers["warm"]))  # tree_rss_mb lists the root process first
        per = [
            f"worker {pid}: {workers['warm'][pid]:.0f} → {workers['end'].get(pid, 0):.0f} MB "
            f"({(workers['end'].get(pid, 0) / workers['warm'][pid] - 1) * 100:+.1f}%)"
            for pid in sorted(workers["warm"], key=int)
            if pid != master
        ]
        lines += ["", "Gateway per worker (after warm-up → end): " + "; ".join(per) + "."]
    return lines


def markdown(record: RunRecord) -> str:
    """The latest.md report: setup, the table with ratios, RSS, missing systems."""
    header = (
        "| scenario | direct | floor | floor_redis | gateway (ours) | Portkey | LiteLLM "
        "| ours/floor_redis | ours/Portkey | ours/LiteLLM | ours/direct |"
    )
    lines = [
        f"# Gateway benchmark — {record.when}",
        "",
        f"Machine: {record.machine}.",
        f"Load: {record.load}; {record.duration_s:g} s per scenario (c300_long_stream: at least "
        "10 s) after a warm-up; latency is "
        "the full response time (streams included) of completed requests.",
        "Ratios are ours divided by the peer: above 1 is better for req/s, below 1 is better "
        "for latency. A measured system with 0 req/s and — latencies completed no request "
        "within the window (latest.json then holds 0 for its latencies).",
        "",
        "## Against the floor",
        "",
        "floor: a bare Python proxy (raw ASGI, same server and workers as ours, no product "
        "logic); floor_redis: the same plus one EVALSHA (two limits) before the upstream call "
        "and one XADD before the last byte, the least work the product requires per request.",
        "",
        *_floor_lines(record),
        "",
        "## All systems",
        "",
        header,
        "|---|" + "---|" * (len(SYSTEMS) + len(RATIO_PEERS)),
    ]
    for name, *_ in record.scenarios:
        lines += _scenario_rows(record, name)
    lines += [
        "",
        "Scenarios: "
        + "; ".join(
            f"{n} = {c} concurrent {'streaming' if s else 'JSON'}"
            f"{' one-second streams' if slow else ''}"
            for n, c, s, slow in record.scenarios
        )
        + "; every response has 20 completion tokens (20 content chunks when streaming).",
        "",
    ]
    lines += ["## Memory (RSS, process tree)", "", *_rss_lines(record), ""]
    lines += ["## Systems", ""]
    for system in SYSTEMS:
        if system in record.missing:
            lines.append(f"- {system}: not available ({record.missing[system]})")
        else:
            lines.append(f"- {system}: " + "; ".join(record.notes.get(system, [])))
    busy = {s: b for s, b in record.background.items() if b > 15}
    if busy:
        lines += [
            "",
            "**Warning:** the machine was busy with other work before measuring ("
            + ", ".join(f"{s}: {b:.0f}% of all cores" for s, b in busy.items())
            + "); these figures are skewed. Re-run on a quiet machine.",
        ]
    return "\n".join(lines) + "\n"


def _matplotlib():
    """matplotlib from the venv, else from bench/.peers/plot (installed there on demand)."""
    try:
        import matplotlib
    except ImportError:
        target = PEERS_DIR / "plot"
        if not (target / "matplotlib").exists():
            print(f"  installing {MATPLOTLIB_PIN} into {target} …", flush=True)
            subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "pip",
                    "install",
                    "--quiet",
                    "--target",
                    str(target),
                    MATPLOTLIB_PIN,
                ],
                check=False,
                capture_output=True,
            )
        sys.path.append(str(target))  # appended: the venv's own packages win
        import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def chart_png(record: RunRecord, path: Path) -> str | None:
    """Latency (p50 solid, p99 dashed) versus concurrency, JSON and streaming side by side."""
    try:
        plt = _matplotlib()
    except ImportError as exc:
        return f"no chart: matplotlib unavailable ({exc})"
    fig, axes = plt.subplots(1, 2, figsize=(12, 5))
    colors = {
        "direct": "#777777",
        "floor": "#bcbd22",
        "floor_redis": "#ff7f0e",
        "gateway": "#d62728",
        "portkey": "#1f77b4",
        "litellm": "#2ca02c",
    }
    for axis, stream in zip(axes, (False, True), strict=True):
        chosen = [(n, c) for n, c, s, slow in record.scenarios if s == stream and not slow]
        for system in SYSTEMS:
            for metric, style in (("p50_ms", "-"), ("p99_ms", "--")):
                points = [(c, _value(record, n, system, metric)) for n, c in chosen]
                points = [(c, v) for c, v in points if v]
                if points:
                    xs, ys = [c for c, _ in points], [v for _, v in points]
                    axis.plot(
                        xs,
                        ys,
                        style,
                        marker="o",
                        color=colors[system],
                        label=f"{system} {metric.split('_')[0]}",
                    )
        axis.set_xscale("log", base=2)
        axis.set_xticks([c for _, c in chosen], [str(c) for _, c in chosen])
        axis.set_yscale("log")
        axis.set_xlabel("concurrent requests")
        axis.set_ylabel("full response time, ms (log)")
        axis.set_title(("streaming, 20 chunks" if stream else "JSON") + " — p50 solid, p99 dashed")
        axis.grid(True, which="both", alpha=0.3)
        axis.legend(fontsize=7)
    fig.suptitle(f"Latency vs concurrency — {record.when}", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return None


def summary(record: RunRecord) -> str:
    """The short table of the project README: req/s and p99 per scenario, ratios to the floor and
    the peers, and the added latency at concurrency 1."""
    lines = [
        f"Latest `make bench` ({record.when[:16].replace('T', ' ')} UTC) on {record.machine};"
        " auth, two limits and usage recording on; full report in"
        " [bench/results/latest.md](bench/results/latest.md).",
        "",
        "| scenario | ours req/s | floor_redis | Portkey | LiteLLM | ours/floor_redis "
        "| ours/Portkey | ours/LiteLLM | ours p99 ms |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name, *_ in record.scenarios:
        ours, floor, portkey, litellm = (
            _value(record, name, s, "rps") for s in ("gateway", "floor_redis", "portkey", "litellm")
        )
        p99 = _value(record, name, "gateway", "p99_ms")
        cells = [_cell(v, 0) for v in (ours, floor, portkey, litellm)]
        cells += [_ratio(ours, v) for v in (floor, portkey, litellm)] + [_cell(p99, 1)]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join([*lines, "", _added_sentence(record)]) + "\n"


def readme_update(
    block_md: str,
    *,
    readme: Path = BENCH_DIR / "README.md",
    markers: tuple[str, str] = (README_BEGIN, README_END),
) -> None:
    """Replace the block between a README's bench markers with `block_md`."""
    begin, end = markers
    if not readme.exists():
        return
    text = readme.read_text()
    if begin not in text or end not in text:
        return
    head, rest = text.split(begin, 1)
    _, tail = rest.split(end, 1)
    readme.write_text(f"{head}{begin}\n{block_md}{end}{tail}")


def write_all(record: RunRecord, out_dir: Path) -> list[str]:
    """Write latest.json, latest.md, latency.png and the README block; return what was written."""
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    (out_dir / "latest.json").write_text(json.dumps(results_json(record), indent=2) + "\n")
    written.append(str(out_dir / "latest.json"))
    table = markdown(record)
    problem = chart_png(record, out_dir / "latency.png")
    if problem is None:
        table += "\n![latency vs concurrency](latency.png)\n"
        written.append(str(out_dir / "latency.png"))
    else:
        table += f"\n({problem})\n"
    (out_dir / "latest.md").write_text(table)
    written.append(str(out_dir / "latest.md"))
    if out_dir.resolve() == (BENCH_DIR / "results").resolve():  # only the default run
        body = table.replace("# Gateway benchmark", "### Latest run", 1)
        readme_update(body.replace("](latency.png)", "](results/latency.png)"))
        readme_update(
            summary(record), readme=BENCH_DIR.parent / "README.md", markers=SUMMARY_MARKERS
        )
    return written
