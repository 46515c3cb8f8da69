"""`make bench-control`: the management API driven as a lab's customer sync drives it.

One run: a fresh PostgreSQL database (`gw_bench_control`) and Redis database 13 when they answer
(else the embedded defaults), one node started as `gateway serve --workers 2` does, a workspace
with one endpoint and a management key. Then 8 concurrent clients create N groups (one rate and
one usage limit each) and mint a key for each, and time, on a sample of those groups: get, PATCH,
lookup by external id, usage, key revoke and an events page. Then batch creates: more groups,
1,000 a call (`groups:batch`), and a key for each (`api_keys:batch`), in objects per second; and
a walk of the whole group list a page of 100 at a time. Writes bench/results/control.json and the
README's control-plane line.

Before the timed reads and before the walk the database is vacuumed and analyzed, untimed, as
autovacuum does to a lab's tables within a minute of a bulk load: on a server that runs without it,
tables loaded since their last analyze keep the planner's defaults, and a group's models read by
hash-joining every limit row (2.6 ms of PostgreSQL CPU per get at 20,000 groups, against 0.05).

Each operation also reports the CPU time the node's processes (`server_cpu_ms`) and the
database's backends (`db_cpu_ms`) spent per request over its phase: on a machine shared with other
work the latencies move with the load, the CPU per request much less.

    python -m bench.control [--groups N] [--clients 8] [--sample 1000] [--batch-groups 10000]
                            [--database NAME] [--redis-url URL] [--out FILE]
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import random
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import psutil

from bench.gateway import gateway_env, manage_run
from bench.peers import BENCH_DIR, HOST, Unavailable, free_port, http_ready, proc_spawn, proc_stop
from bench.report import machine_describe, readme_update
from gateway_project.cli import serve_argv

DATABASE = "gw_bench_control"
REDIS_URL = "redis://127.0.0.1:6379/13"
SLUG = "benchctl/model"
README_MARKERS = ("<!-- bench:control -->", "<!-- /bench:control -->")
RESULTS = BENCH_DIR / "results" / "control.json"
RATE_LIMIT = {"type": "REQUEST", "unit": "MINUTE", "threshold": 600}
USAGE_LIMIT = {"type": "TOKEN", "unit": "DAY", "threshold": 10_000_000}
WORKERS = 2
BATCH = 1000


@dataclass
class Op:
    """One operation's latencies (seconds) and the wall time its phase took."""

    latencies: list[float] = field(default_factory=list)
    wall: float = 0.0
    errors: int = 0
    items: int = 0  # a batch op: objects made (per_s counts these, not requests)
    cpu: tuple[float, float] | None = None  # (node, database) CPU seconds over the phase

    def summary(self) -> dict[str, float | int]:
        """per_s over the phase's wall time (objects for a batch op); p50/p99 in milliseconds."""
        ordered = sorted(self.latencies)
        if not ordered:
            return {"count": 0, "errors": self.errors}
        p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]
        done = self.items or len(ordered)
        cpu = {}
        if self.cpu is not None:
            node, database = self.cpu
            cpu = {
                "server_cpu_ms": round(node * 1000 / len(ordered), 2),
                "db_cpu_ms": round(database * 1000 / len(ordered), 2),
            }
        return {
            "count": len(ordered),
            "errors": self.errors,
            **({"items": self.items} if self.items else {}),
            "per_s": round(done / self.wall, 1) if self.wall else 0.0,
            "p50_ms": round(statistics.median(ordered) * 1000, 1),
            "p99_ms": round(p99 * 1000, 1),
            **cpu,
        }


class CpuMeter:
    """CPU seconds used so far by the node (its process and workers) and by the PostgreSQL
    backends serving `database`; nothing is counted when neither can be read."""

    def __init__(self, node_pid: int | None, database: str | None) -> None:
        self.node_pid, self.database = node_pid, database

    def _processes(self) -> tuple[list[psutil.Process], list[psutil.Process]]:
        node: list[psutil.Process] = []
        if self.node_pid is not None:
            try:
                root = psutil.Process(self.node_pid)
                node = [root, *root.children(recursive=True)]
            except psutil.Error:
                node = []
        backends: list[psutil.Process] = []
        if self.database:
            for proc in psutil.process_iter(["name", "cmdline"]):
                cmdline = " ".join(proc.info["cmdline"] or [])
                if cmdline.startswith("postgres:") and f" {self.database} " in f"{cmdline} ":
                    backends.append(proc)
        return node, backends

    def read(self) -> tuple[float, float]:
        """(node, database) CPU seconds of the processes alive now (pooled connections stay)."""
        totals = []
        for group in self._processes():
            total = 0.0
            for proc in group:
                try:
                    times = proc.cpu_times()
                except psutil.Error:
                    continue
                total += times.user + times.system
            totals.append(total)
        return totals[0], totals[1]


def _cpu_since(meter: CpuMeter | None, before: tuple[float, float] | None) -> Any:
    if meter is None or before is None:
        return None
    after = meter.read()
    return (max(0.0, after[0] - before[0]), max(0.0, after[1] - before[1]))


class Client:
    """The management API over one pooled aiohttp session."""

    def __init__(self, root: str, key: str, session: aiohttp.ClientSession) -> None:
        self.root, self.session = root, session
        self.headers = {"Authorization": f"Bearer {key}"}

    async def call(self, op: Op, method: str, path: str, body: Any = None) -> Any:
        """One timed request; a non-2xx answer counts as an error and returns None."""
        started = time.perf_counter()
        async with self.session.request(
            method, f"{self.root}{path}", json=body, headers=self.headers
        ) as response:
            data = await response.read()
        op.latencies.append(time.perf_counter() - started)
        if response.status >= 300:
            op.errors += 1
            if op.errors <= 3:
                print(f"  {method} {path} -> {response.status} {data[:200]!r}", flush=True)
            return None
        return json.loads(data) if data else None


async def _phase(
    op: Op,
    items: Sequence[Any],
    clients: int,
    one: Callable[[Any], Awaitable[None]],
    meter: CpuMeter | None = None,
) -> None:
    """Run `one` over `items` with `clients` concurrent callers; the phase's wall time (and the
    server's CPU time, with a meter) into op."""
    queue = list(reversed(items))

    async def caller() -> None:
        while queue:
            await one(queue.pop())

    before = meter.read() if meter else None
    started = time.perf_counter()
    await asyncio.gather(*(caller() for _ in range(clients)))
    op.wall = time.perf_counter() - started
    op.cpu = _cpu_since(meter, before)


def database_settle(database_url: str | None) -> None:
    """VACUUM ANALYZE the database at `database_url` (nothing without one)."""
    if database_url is None:
        return
    import psycopg

    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("VACUUM ANALYZE")


async def _drive(
    root: str,
    key: str,
    args: argparse.Namespace,
    meter: CpuMeter | None = None,
    database_url: str | None = None,
) -> dict[str, Op]:
    ops: dict[str, Op] = {}
    connector = aiohttp.TCPConnector(limit=args.clients * 2)
    async with aiohttp.ClientSession(connector=connector) as session:
        api = Client(root, key, session)
        groups: list[str] = []
        prefixes: dict[str, str] = {}

        async def create(i: int) -> None:
            body = {
                "metadata": {"name": f"Customer {i}", "external_entity_id": f"cust-{i}"},
                "models": [
                    {"slug": SLUG, "rate_limits": [RATE_LIMIT], "usage_limits": [USAGE_LIMIT]}
                ],
            }
            answer = await api.call(ops["group create"], "POST", "/v1/gateway/groups", body)
            if answer:
                groups.append(answer["id"])

        async def mint(group: str) -> None:
            path = f"/v1/gateway/groups/{group}/api_keys"
            answer = await api.call(ops["key mint"], "POST", path, {"name": "backend"})
            if answer:
                prefixes[group] = answer["prefix"]

        ops["group create"] = Op()
        print(f"  creating {args.groups} groups", flush=True)
        await _phase(ops["group create"], range(args.groups), args.clients, create, meter)
        ops["key mint"] = Op()
        await _phase(ops["key mint"], groups, args.clients, mint, meter)
        await asyncio.to_thread(database_settle, database_url)

        sample = random.Random(7).sample(groups, min(args.sample, len(groups)))
        since = (dt.datetime.now(dt.UTC) - dt.timedelta(days=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
        singles: dict[str, Callable[[str], tuple[str, str, Any]]] = {
            "group get": lambda g: ("GET", f"/v1/gateway/groups/{g}", None),
            "group patch": lambda g: (
                "PATCH",
                f"/v1/gateway/groups/{g}",
                {"metadata": {"name": f"Renamed {g}"}},
            ),
            "lookup by external id": lambda g: ("GET", "/v1/gateway/groups", None),
            "group usage": lambda g: ("GET", f"/v1/gateway/groups/{g}/usage", None),
            "events page": lambda g: ("GET", f"/v1/gateway/events?start_time={since}", None),
            "key revoke": lambda g: (
                "DELETE",
                f"/v1/gateway/groups/{g}/api_keys/{prefixes.get(g, 'none')}",
                None,
            ),
        }
        external = {g: i for i, g in enumerate(groups)}
        for name, request in singles.items():
            ops[name] = op = Op()

            async def one(g: str, op: Op = op, request: Any = request, name: str = name) -> None:
                method, path, body = request(g)
                if name == "lookup by external id":
                    path = f"/v1/gateway/groups?external_entity_id=cust-{external[g]}"
                await api.call(op, method, path, body)

            await _phase(op, sample, args.clients, one, meter)

        await _batches(api, ops, args, meter)
        await asyncio.to_thread(database_settle, database_url)

        ops["list page (100)"] = op = Op()
        before = meter.read() if meter else None
        started = time.perf_counter()
        cursor: str | None = None
        while True:
            path = "/v1/gateway/groups?limit=100" + (f"&cursor={cursor}" if cursor else "")
            page = await api.call(op, "GET", path)
            if not page or not page["pagination"]["has_more"]:
                break
            cursor = page["pagination"]["cursor"]
        op.wall = time.perf_counter() - started
        op.cpu = _cpu_since(meter, before)
    return ops


async def _batches(
    api: Client, ops: dict[str, Op], args: argparse.Namespace, meter: CpuMeter | None
) -> None:
    """Create `--batch-groups` more groups through groups:batch, then a key each through
    api_keys:batch, BATCH at a time."""
    model = {"slug": SLUG, "rate_limits": [RATE_LIMIT], "usage_limits": [USAGE_LIMIT]}
    starts = list(range(0, args.batch_groups, BATCH))
    created: list[str] = []

    async def groups(start: int) -> None:
        body = {
            "groups": [
                {
                    "metadata": {"name": f"Bulk {i}", "external_entity_id": f"bulk-{i}"},
                    "models": [model],
                }
                for i in range(start, min(start + BATCH, args.batch_groups))
            ]
        }
        answer = await api.call(ops["bulk group create"], "POST", "/v1/gateway/groups:batch", body)
        if answer:
            created.extend(item["id"] for item in answer["items"])
            ops["bulk group create"].items += len(answer["items"])

    async def keys(start: int) -> None:
        body = {
            "keys": [{"group_id": g, "name": "backend"} for g in created[start : start + BATCH]]
        }
        answer = await api.call(ops["bulk key mint"], "POST", "/v1/gateway/api_keys:batch", body)
        if answer:
            ops["bulk key mint"].items += len(answer["items"])

    ops["bulk group create"] = Op()
    print(f"  creating {args.batch_groups} groups in batches of {BATCH}", flush=True)
    await _phase(ops["bulk group create"], starts, args.clients, groups, meter)
    ops["bulk key mint"] = Op()
    batches = list(range(0, len(created), BATCH))
    await _phase(ops["bulk key mint"], batches, args.clients, keys, meter)


def _setup() -> dict[str, str]:
    """Workspace, org prefix, one endpoint, a management key (run in the gateway's env)."""
    import django

    django.setup()
    from django.db import transaction

    from groups.services import org_prefix_register, workspace_create
    from groups.services.audit import SYSTEM_ACTOR
    from keys.services import management_key_create
    from routing.services import endpoint_create

    actor = SYSTEM_ACTOR
    with transaction.atomic():
        workspace = workspace_create(name="Control bench", actor=actor, onboarded=True)
        org_prefix_register(workspace=workspace, prefix=SLUG.split("/")[0], actor=actor)
        target = {
            "provider": "OPENAI_COMPATIBLE",
            "base_url": f"http://{HOST}:9/v1",
            "target_model": "m",
        }
        endpoint_create(workspace=workspace, actor=actor, slug=SLUG, targets=[target])
        _, key = management_key_create(workspace=workspace, actor=actor, name="bench")
    return {"key": key}


def _args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="bench.control", description=__doc__.split("\n")[0])
    parser.add_argument("--groups", type=int, default=20_000, help="groups to create (20000)")
    parser.add_argument("--clients", type=int, default=8, help="concurrent clients (8)")
    parser.add_argument("--sample", type=int, default=1000, help="groups per timed op (1000)")
    parser.add_argument(
        "--batch-groups", type=int, default=10_000, help="groups made by batch creates (10000)"
    )
    parser.add_argument("--out", type=Path, default=RESULTS, help="results file")
    parser.add_argument(
        "--database", default=DATABASE, help=f"PostgreSQL database, emptied first ({DATABASE})"
    )
    parser.add_argument(
        "--redis-url", default=REDIS_URL, help=f"Redis database, emptied first ({REDIS_URL})"
    )
    return parser.parse_args(argv)


def _table(result: dict[str, Any]) -> str:
    lines = [
        "| operation | per s | p50 ms | p99 ms | server CPU ms | db CPU ms | count | errors |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, op in result["ops"].items():
        lines.append(
            f"| {name} | {op.get('per_s', '—')} | {op.get('p50_ms', '—')} | "
            f"{op.get('p99_ms', '—')} | {op.get('server_cpu_ms', '—')} | "
            f"{op.get('db_cpu_ms', '—')} | {op['count']} | {op['errors']} |"
        )
    return "\n".join(lines) + "\n"


def _readme_line(result: dict[str, Any]) -> str:
    ops = result["ops"]

    def figure(name: str, key: str) -> str:
        return str(ops.get(name, {}).get(key, "—"))

    return (
        f"Latest `make bench-control` ({result['when']}, {result['groups']:,} groups, "
        f"{result['clients']} clients, {result['stores']}): group create "
        f"{figure('group create', 'per_s')}/s (p50 {figure('group create', 'p50_ms')} ms), "
        f"list page of 100 p50 {figure('list page (100)', 'p50_ms')} ms, lookup by external id "
        f"p50 {figure('lookup by external id', 'p50_ms')} ms, key mint "
        f"{figure('key mint', 'per_s')}/s, bulk group create "
        f"{figure('bulk group create', 'per_s')} groups/s; all figures in "
        "[bench/results/control.json](bench/results/control.json).\n"
    )


def main(argv: list[str] | None = None) -> int:
    """Start a node, drive it, write the results."""
    args = _args(argv)
    tmp = Path(tempfile.mkdtemp(prefix="gw-bench-control-"))
    logs = tmp / "logs"
    logs.mkdir()
    env, notes = gateway_env(tmp=tmp, database=args.database, redis_url=args.redis_url)
    node = None
    try:
        if "REDIS_URL" not in env:
            manage_run(env, ["-m", "gateway_project.embedded_redis", "start"], what="Redis")
        manage_run(env, ["manage.py", "migrate", "--noinput"], what="migrate")
        out = manage_run(env, ["-m", "bench.control", "setup"], what="bench data setup")
        key = json.loads(out.strip().splitlines()[-1])["key"]
        port = free_port()
        node = proc_spawn(
            "gateway", serve_argv(workers=WORKERS, bind=f"{HOST}:{port}"), logs=logs, env=env
        )
        http_ready(f"http://{HOST}:{port}/healthz", proc=node, timeout=60)
        print(f"bench-control: {machine_describe()}; {', '.join(notes)}", flush=True)
        database = args.database if "DATABASE_URL" in env else None
        meter = CpuMeter(node.popen.pid, database)
        root = f"http://{HOST}:{port}"
        ops = asyncio.run(_drive(root, key, args, meter, env.get("DATABASE_URL")))
    except Unavailable as exc:
        print(f"bench-control: {exc} (logs in {logs})")
        return 1
    finally:
        if node is not None:
            proc_stop(node)
        if "REDIS_URL" not in env:
            manage_run(env, ["-m", "gateway_project.embedded_redis", "stop"], what="Redis stop")
    result = {
        "machine": machine_describe(),
        "when": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "groups": args.groups,
        "clients": args.clients,
        "workers": WORKERS,
        "stores": "; ".join(notes),
        "ops": {name: op.summary() for name, op in ops.items()},
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print("\n" + _table(result))
    if args.out.resolve() == RESULTS.resolve():
        readme_update(
            _readme_line(result), readme=BENCH_DIR.parent / "README.md", markers=README_MARKERS
        )
    print(f"written: {args.out}")
    shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    if sys.argv[1:] == ["setup"]:
        print(json.dumps(_setup()))
        sys.exit(0)
    sys.exit(main())
