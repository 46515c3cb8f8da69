"""`make bench-ingest`: how many usage events one worker moves, measured on the real pipeline.

One run: a fresh PostgreSQL database (`gw_bench_ingest`) and Redis database 14 when they answer
(else the embedded defaults), a workspace with a webhook endpoint at the bundled receiver (its own
process). N synthetic events, shaped as the gateway records them, are written to the usage stream
first (a backlog), then one process does what one Celery worker does:
- ingest: stream -> consumer group -> PostgreSQL rows, until the stream is empty
  (`ingest_events_per_s` its wall rate, `ingest_events_per_cpu_s` per CPU second of the worker);
- delivery: batch the events into signed webhook deliveries and POST them to the receiver
  (`deliver_events_per_s`);
- the events API: the table is first topped up to --rows with rows generated in PostgreSQL (INSERT
  ... SELECT generate_series, not through ingest: the last 30 days, dealt to --tenants workspaces,
  every retained day given its partition), then one-day pages of 100 for the bench's workspace,
  through the whole view stack, p50/p99 after a few untimed ones, and the first page's plan
  (planning ms, partitions read of those attached); with several sizes, at each of them;
- the drain (--drain N): N events written while PostgreSQL is unreachable (an ingest run is
  refused), then the wall time one worker (`backlog_drain_s`) and two worker processes
  (`backlog_drain_2_workers_s`) take to store them. With --drain 0, `backlog_drain_s` is the
  ingest step's wall time.
Writes bench/results/ingest.json and the README's billing line.

    python -m bench.ingest [--events N] [--rows N[,N...]] [--tenants N] [--drain N]
        [--database NAME] [--redis-url URL] [--out FILE]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import os
import random
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.gateway import gateway_env, manage_run
from bench.peers import BENCH_DIR, HOST, Unavailable, free_port, http_ready, proc_spawn, proc_stop
from bench.report import machine_describe, readme_update

DATABASE = "gw_bench_ingest"
REDIS_URL = "redis://127.0.0.1:6379/14"
README_MARKERS = ("<!-- bench:ingest -->", "<!-- /bench:ingest -->")
RESULTS = BENCH_DIR / "results" / "ingest.json"
CUSTOMERS = 1000
WRITE_CHUNK = 5000
API_QUERIES = 1000
API_WARMUP = 10  # untimed first requests (imports, caches and query plans of a fresh process)
GENERATE_CHUNK = 1_000_000
GENERATE_DAYS = 30  # generated events span the last 30 days
TABLE = "billing_usageevent"


def _event(i: int, *, workspace: str, group: str, start: dt.datetime) -> dict[str, Any]:
    """One event as the gateway records it (distinct request id and idempotency key)."""
    from gateway_project.kernel.ids import new_ulid

    moment = start + dt.timedelta(milliseconds=i)
    return {
        "idempotencyKey": new_ulid(),
        "timestamp": moment.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
        "requestId": f"bench-{i:012d}",
        "requestMetadata": {"trace": f"t{i % 97}"},
        "modelSlug": "benching/model",
        "externalCustomerId": f"cust-{i % CUSTOMERS}",
        "externalEntityId": f"cust-{i % CUSTOMERS}",
        "apiKeyPrefix": f"sky_bench{i % CUSTOMERS:07d}",
        "groupId": group,
        "status": "completed",
        "tokens": {
            "inputTokens": 120 + i % 50,
            "outputTokens": 300 + i % 70,
            "cachedInputTokens": 0,
        },
        "workspaceId": workspace,
        "usageEstimated": False,
        "httpStatus": 200,
        "target": "primary",
        "totalMs": 812.5,
        "upstreamMs": 801.25,
        "firstByteMs": 35.5,
    }


def _setup(receiver_url: str) -> tuple[Any, Any, str]:
    """Workspace, a group, a management key, the webhook endpoint; (workspace, group, key)."""
    from django.db import transaction

    from billing.services.webhooks import webhook_endpoint_create
    from groups.services.audit import SYSTEM_ACTOR
    from keys.services import management_key_create

    with transaction.atomic():
        workspace, group = _tenant("Ingest bench", prefix="benching", customer="bench-customer")
        _, key = management_key_create(workspace=workspace, actor=SYSTEM_ACTOR, name="bench")
        webhook_endpoint_create(workspace=workspace, url=receiver_url, actor=SYSTEM_ACTOR)
    return workspace, group, key


def _tenant(name: str, *, prefix: str, customer: str) -> tuple[Any, Any]:
    """A workspace with an endpoint `<prefix>/model` and a group for `customer`."""
    from groups.services import group_create, org_prefix_register, workspace_create
    from groups.services.audit import SYSTEM_ACTOR
    from routing.services import endpoint_create

    actor = SYSTEM_ACTOR
    workspace = workspace_create(name=name, actor=actor, onboarded=True)
    org_prefix_register(workspace=workspace, prefix=prefix, actor=actor)
    target = {
        "provider": "OPENAI_COMPATIBLE",
        "base_url": f"http://{HOST}:9/v1",
        "target_model": "m",
    }
    endpoint_create(workspace=workspace, actor=actor, slug=f"{prefix}/model", targets=[target])
    group = group_create(
        workspace=workspace,
        actor=actor,
        external_entity_id=customer,
        name=customer,
        models=[{"slug": f"{prefix}/model"}],
    )
    return workspace, group


def _backlog(events: int, *, workspace: str, group: str, first: int = 0) -> None:
    """XADD `events` events (numbered from `first`) to the usage stream, pipelined."""
    from django_redis import get_redis_connection

    from billing.services.usage import USAGE_STREAM

    client = get_redis_connection("default")
    start = dt.datetime.now(dt.UTC) - dt.timedelta(hours=1)
    for base in range(first, first + events, WRITE_CHUNK):
        pipe = client.pipeline(transaction=False)
        for i in range(base, min(first + events, base + WRITE_CHUNK)):
            event = _event(i, workspace=workspace, group=group, start=start)
            pipe.xadd(USAGE_STREAM, {"e": json.dumps(event, separators=(",", ":"))})
        pipe.execute()


def _ingest() -> tuple[int, float, float, float | None]:
    """Drain the stream as the ingest task does; (events stored, wall seconds, this process's CPU
    seconds, its PostgreSQL backend's CPU seconds when /proc shows them)."""
    from billing.services.ingest import usage_ingest

    backend = _backend_cpu()
    stored, started, cpu = 0, time.perf_counter(), time.process_time()
    while True:
        moved = usage_ingest(max_batches=100)
        if moved == 0:
            break
        stored += moved
    wall, cpu = time.perf_counter() - started, time.process_time() - cpu
    after = _backend_cpu()
    backend_used = None if after is None or backend is None else after - backend
    return stored, wall, cpu, backend_used


def _backend_cpu() -> float | None:
    """CPU seconds of this connection's PostgreSQL backend, when it runs on this machine."""
    from django.db import connection

    if connection.vendor != "postgresql":
        return None
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        pid = cursor.fetchone()[0]
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _postgres_unreachable_ingest() -> None:
    """One ingest run while PostgreSQL is unreachable (the default database pointed at a port
    nothing listens on): it must be refused and leave every event in the stream."""
    from django.db import OperationalError, connections

    from billing.services.ingest import usage_ingest

    connection: Any = connections["default"]
    port = connection.settings_dict["PORT"]
    connection.close()
    connection.close_pool()
    connection.settings_dict["PORT"] = str(free_port())
    try:
        usage_ingest()
    except OperationalError:
        pass
    else:
        raise Unavailable("ingest ran with PostgreSQL unreachable")
    finally:
        connection.close()
        connection.close_pool()
        connection.settings_dict["PORT"] = port


def _drain(
    events: int, workers: int, *, workspace: str, group: str, first: int
) -> tuple[float, float]:
    """Fill `events` during a PostgreSQL outage, then the wall seconds `workers` worker processes
    (this one and workers - 1 others, started and set up beforehand) take to store them all, and
    the CPU seconds this one used."""
    import multiprocessing

    from django_redis import get_redis_connection

    from billing.models import UsageEvent
    from billing.services.usage import USAGE_STREAM

    _backlog(events, workspace=workspace, group=group, first=first)
    _postgres_unreachable_ingest()
    before = UsageEvent.objects.count()
    context = multiprocessing.get_context("spawn")
    ready, go = context.Barrier(workers), context.Event()
    others = [context.Process(target=_drain_worker, args=(ready, go)) for _ in range(workers - 1)]
    for process in others:
        process.start()
    ready.wait(timeout=120)
    started, cpu = time.perf_counter(), time.process_time()
    go.set()
    _drain_run()
    cpu = time.process_time() - cpu
    for process in others:
        process.join()
    seconds = time.perf_counter() - started
    stored = UsageEvent.objects.count() - before
    left = get_redis_connection("default").xlen(USAGE_STREAM)
    if stored != events or left or any(process.exitcode for process in others):
        raise Unavailable(f"drain: {events} filled, {stored} stored, {left} left in the stream")
    return seconds, cpu


def _drain_worker(ready: Any, go: Any) -> None:
    """Another worker process: set up, wait for the start, drain."""
    import django

    django.setup()
    ready.wait(timeout=120)
    go.wait(timeout=120)
    _drain_run()


def _drain_run() -> None:
    from billing.services.ingest import usage_ingest

    while usage_ingest(max_batches=100):
        pass


def _deliver() -> tuple[int, float]:
    """Batch everything and run every due delivery; (events delivered, seconds)."""
    from billing.models import DeliveryStatus, WebhookDelivery
    from billing.selectors import deliveries_due
    from billing.services.attempts import delivery_attempt_run
    from billing.services.batching import events_batch

    started = time.perf_counter()
    later = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=30)
    while events_batch(now=later):
        pass
    while due := deliveries_due(now=later, limit=500):
        for delivery_id in due:
            delivery_attempt_run(delivery_id=delivery_id, now=later)
    seconds = time.perf_counter() - started
    delivered = WebhookDelivery.objects.filter(status=DeliveryStatus.DELIVERED)
    return sum(d.event_count for d in delivered.only("event_count")), seconds


def _tenants(count: int, *, workspace: str, group: str) -> list[tuple[str, str]]:
    """The bench's (workspace, group) and `count` - 1 more tenants with a group each."""
    pairs = [(workspace, group)]
    for n in range(1, count):
        other, made = _tenant(f"Ingest bench {n}", prefix=f"benching{n}", customer=f"bench-{n}")
        pairs.append((other.id, made.id))
    return pairs


def _rows_generate(rows: int, *, tenants: list[tuple[str, str]]) -> int:
    """Top the events table up to `rows` with INSERT ... SELECT generate_series (PostgreSQL), not
    through ingest: rows in time order over the last GENERATE_DAYS days, dealt in turn to the
    `tenants` (workspace, group), already batched; how many. Each retained day has its
    partition first (as many as the retention keeps), so the events API is planned against
    them all."""
    from django.conf import settings
    from django.db import connection

    from billing.models import UsageEvent
    from billing.services.partitions import events_partitioned, partitions_ensure

    have = UsageEvent.objects.count()
    if connection.vendor != "postgresql" or rows <= have:
        return 0
    if events_partitioned():
        partitions_ensure(behind=max(GENERATE_DAYS + 1, settings.GATEWAY_EVENTS_RETENTION_DAYS))
    table = connection.ops.quote_name(UsageEvent._meta.db_table)
    started = time.perf_counter()
    for base in range(have, rows, GENERATE_CHUNK):
        top = min(rows, base + GENERATE_CHUNK)
        print(f"  generating rows {base:,}..{top:,} in PostgreSQL", flush=True)
        with connection.cursor() as cursor:
            cursor.execute(
                f"""
                INSERT INTO {table} (
                    idempotency_key, request_id, timestamp, workspace_id, group_id,
                    external_entity_id, api_key_prefix, model_slug, request_metadata, status,
                    input_tokens, output_tokens, cached_input_tokens, cost_currency,
                    usage_estimated, http_status, target, total_ms, upstream_ms, batched_at,
                    batch, ingest_note, quarantine_error, created_at)
                SELECT 'G' || lpad(n::text, 25, '0'), 'gen-' || n,
                    now() - (1 - (n - %(have)s)::float8 / (%(rows)s - %(have)s))
                        * %(spread)s * interval '1 millisecond',
                    (%(workspaces)s::text[])[1 + mod(n, %(tenants)s)],
                    (%(groups)s::text[])[1 + mod(n, %(tenants)s)],
                    'cust-' || mod(n, 1000), 'sky_gen' || mod(n, 1000), 'benching/model',
                    '{{}}', 'completed', 120, 300, 0, '', false, 200, 'primary', 800, 790,
                    now(), '', '', '', now()
                FROM generate_series(%(base)s, %(top)s - 1) AS n
                """,
                {
                    "have": have,
                    "rows": rows,
                    "spread": GENERATE_DAYS * 86_400_000,
                    "workspaces": [workspace for workspace, _ in tenants],
                    "groups": [group for _, group in tenants],
                    "tenants": len(tenants),
                    "base": base,
                    "top": top,
                },
            )
    with connection.cursor() as cursor:
        cursor.execute(f"ANALYZE {table}")
    print(
        f"  {rows - have:,} rows generated in {time.perf_counter() - started:.0f} s",
        flush=True,
    )
    return rows - have


def _events_api(key: str) -> tuple[list[float], list[str]]:
    """Latencies (s) of one-day pages of 100 (the first page and pages further in, by cursor),
    after API_WARMUP untimed ones; and the SQL of the first page."""
    from django.db import connection
    from django.test import Client
    from django.test.utils import CaptureQueriesContext

    client = Client(HTTP_AUTHORIZATION=f"Bearer {key}", HTTP_HOST="127.0.0.1")
    since = (dt.datetime.now(dt.UTC) - dt.timedelta(days=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
    first = f"/v1/gateway/events?start_time={since}&limit=100"
    latencies: list[float] = []
    cursors: list[str] = []
    rng = random.Random(7)
    with CaptureQueriesContext(connection) as queries:
        client.get(first)
    sql = [q["sql"] for q in queries.captured_queries if "billing_usageevent" in q["sql"]]
    for i in range(API_WARMUP + API_QUERIES):
        url = first if i % 2 == 0 or not cursors else rng.choice(cursors)
        started = time.perf_counter()
        answer = client.get(url)
        if i >= API_WARMUP:
            latencies.append(time.perf_counter() - started)
        if answer.status_code != 200:
            raise Unavailable(f"events API answered {answer.status_code}: {answer.content[:200]!r}")
        cursor = answer.json()["pagination"]["cursor"]
        if cursor and len(cursors) < 50:
            cursors.append(f"/v1/gateway/events?cursor={cursor}&limit=100")
    return latencies, sql


def _plan(sql: list[str]) -> dict[str, Any]:
    """How PostgreSQL runs the first page's query (median of 5 on one connection): planning and
    execution ms, and how many of the table's partitions it reads (pruned at plan time)."""
    from django.db import connection

    if connection.vendor != "postgresql" or not sql:
        return {}
    runs = []
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM pg_inherits WHERE inhparent = %s::regclass", [TABLE])
        partitions = cursor.fetchone()[0]
        for _ in range(5):
            cursor.execute(f"EXPLAIN (ANALYZE, SUMMARY, FORMAT JSON) {sql[0]}")
            plan = cursor.fetchone()[0]
            runs.append(plan[0] if isinstance(plan, list) else json.loads(plan)[0])
    read = json.dumps(runs[0]["Plan"]).count('"Relation Name"')
    return {
        "partitions": partitions,
        "partitions_read": read,
        "planning_ms": round(statistics.median(run["Planning Time"] for run in runs), 3),
        "execution_ms": round(statistics.median(run["Execution Time"] for run in runs), 3),
    }


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * q))]


def _run(
    events: int, receiver_url: str, *, drain: int, rows: list[int], tenants: int
) -> dict[str, Any]:
    import django

    django.setup()
    for name in ("httpx", "gateway.management"):  # a line per webhook POST and per API call
        logging.getLogger(name).setLevel(logging.WARNING)
    logging.getLogger("psycopg.pool").setLevel(logging.ERROR)  # each refused connect in an outage
    from billing.models import UsageEvent

    workspace, group, key = _setup(receiver_url)
    print(f"  writing {events:,} events to the usage stream", flush=True)
    _backlog(events, workspace=workspace.id, group=group.id)
    print("  ingesting", flush=True)
    load = {"ingest_start": os.getloadavg()[0]}
    stored, ingest_s, ingest_cpu, backend_cpu = _ingest()
    load["ingest_end"] = os.getloadavg()[0]
    print(
        f"  {stored:,} stored in {ingest_s:.1f} s (worker CPU {ingest_cpu:.1f} s, its "
        f"PostgreSQL backend {backend_cpu if backend_cpu is not None else '?'} s); delivering",
        flush=True,
    )
    delivered, deliver_s = _deliver()
    print(f"  {delivered:,} delivered in {deliver_s:.1f} s; events API", flush=True)
    pairs = _tenants(tenants, workspace=workspace.id, group=group.id)
    generated, sizes = 0, []
    for size in rows or [0]:
        generated += _rows_generate(size, tenants=pairs)
        latencies, sql = _events_api(key)
        size_figures = {
            "rows": UsageEvent.objects.count(),
            "p50_ms": round(statistics.median(latencies) * 1000, 1),
            "p99_ms": round(_percentile(latencies, 0.99) * 1000, 1),
            **_plan(sql),
        }
        print(f"  events API: {size_figures}", flush=True)
        sizes.append(size_figures)
    total = UsageEvent.objects.count()
    if stored != events or total != events + generated or delivered != events:
        raise Unavailable(
            f"lost or doubled: {events} written, {stored} stored, {total} rows, "
            f"{delivered} delivered"
        )
    drains, drain_cpu = {}, {}
    for workers in (1, 2) if drain else ():
        print(f"  {drain:,} events during a PostgreSQL outage; draining with {workers}", flush=True)
        first = events + (workers - 1) * drain
        load[f"drain_{workers}_start"] = os.getloadavg()[0]
        drains[workers], drain_cpu[workers] = _drain(
            drain, workers, workspace=workspace.id, group=group.id, first=first
        )
        load[f"drain_{workers}_end"] = os.getloadavg()[0]
        print(
            f"  drained in {drains[workers]:.1f} s (this worker's CPU {drain_cpu[workers]:.1f} s)",
            flush=True,
        )
    figures = {
        "events": events,
        "ingest_events_per_s": round(stored / ingest_s),
        # The same work per CPU second of the worker process (the machine is shared: wall time
        # counts the waits for a core, CPU time does not).
        "ingest_events_per_cpu_s": round(stored / ingest_cpu),
        "ingest_backend_cpu_s": None if backend_cpu is None else round(backend_cpu, 2),
        "deliver_events_per_s": round(delivered / deliver_s),
        "rows": total,
        # Of which generated in PostgreSQL (INSERT ... SELECT generate_series over the last
        # GENERATE_DAYS days and `tenants` workspaces), not stored through ingest.
        "rows_generated": generated,
        "rows_generated_workspaces": tenants,
        "events_api_p50_ms": sizes[-1]["p50_ms"],
        "events_api_p99_ms": sizes[-1]["p99_ms"],
        # The events API at each table size reached (--rows), with the first page's plan.
        "events_api_by_rows": sizes,
        "backlog_drain_s": round(ingest_s, 1),
        # The machine's 1-minute load average around the measured steps (it may be shared).
        "load_average_1m": {step: round(value, 2) for step, value in load.items()},
    }
    if drain:
        figures |= {
            "backlog_events": drain,
            "backlog_drain_s": round(drains[1], 1),
            "backlog_drain_2_workers_s": round(drains[2], 1),
            "backlog_drain_events_per_s": round(drain / drains[1]),
            "backlog_drain_events_per_cpu_s": round(drain / drain_cpu[1]),
            "backlog_drain_2_workers_events_per_s": round(drain / drains[2]),
        }
    return figures


def _readme_line(result: dict[str, Any]) -> str:
    drain = (
        f"{result['backlog_events']:,} events filled during a PostgreSQL outage drained in "
        f"{result['backlog_drain_s']} s by one worker, {result['backlog_drain_2_workers_s']} s "
        "by two"
        if "backlog_events" in result
        else f"a backlog of {result['events']:,} drained in {result['backlog_drain_s']} s"
    )
    loads = result.get("load_average_1m") or {}
    load = (
        f", 1-minute load average {min(loads.values())}-{max(loads.values())} on the machine"
        if loads
        else ""
    )
    return (
        f"Latest `make bench-ingest` ({result['when']}, {result['events']:,} events, one worker "
        f"process, {result['stores']}{load}): ingest {result['ingest_events_per_s']:,} events/s "
        f"({result['ingest_events_per_cpu_s']:,} per CPU second of the worker), "
        f"webhook delivery {result['deliver_events_per_s']:,} events/s, {drain}, events API "
        f"one-day page p50 {result['events_api_p50_ms']} ms / p99 {result['events_api_p99_ms']} "
        f"ms at {result['rows']:,} rows ({result.get('rows_generated', 0):,} of them generated in "
        "PostgreSQL); [bench/results/ingest.json](bench/results/ingest.json).\n"
    )


def main(argv: list[str] | None = None) -> int:
    """Fresh stores, a receiver, the measured run, the results file."""
    parser = argparse.ArgumentParser(prog="bench.ingest", description=__doc__.split("\n")[0])
    parser.add_argument("--events", type=int, default=200_000, help="events (200000)")
    parser.add_argument("--out", type=Path, default=RESULTS, help="results file")
    parser.add_argument(
        "--rows",
        type=lambda text: [int(size) for size in text.split(",") if size],
        default=[10_000_000],
        help="generate rows (PostgreSQL) up to this table size before timing the events API; "
        "several sizes (1000000,10000000): timed at each (10000000)",
    )
    parser.add_argument(
        "--tenants",
        type=int,
        default=10,
        help="workspaces the generated rows are dealt to, the bench's among them (10)",
    )
    parser.add_argument(
        "--drain",
        type=int,
        default=1_000_000,
        help="fill this many events during a PostgreSQL outage, time the drain with 1 "
        "and 2 workers (1000000; 0: backlog_drain_s is the main run's drain)",
    )
    parser.add_argument("--database", default=DATABASE, help=f"PostgreSQL database ({DATABASE})")
    parser.add_argument("--redis-url", default=REDIS_URL, help=f"Redis ({REDIS_URL})")
    args = parser.parse_args(argv)
    tmp = Path(tempfile.mkdtemp(prefix="gw-bench-ingest-"))
    logs = tmp / "logs"
    logs.mkdir()
    env, notes = gateway_env(tmp=tmp, database=args.database, redis_url=args.redis_url)
    port = free_port()
    receiver = proc_spawn(
        "receiver",
        [sys.executable, "-m", "tests.fakes.webhook_receiver", "--port", str(port)],
        logs=logs,
        env=env,
    )
    try:
        if "REDIS_URL" not in env:
            manage_run(env, ["-m", "gateway_project.embedded_redis", "start"], what="Redis")
        manage_run(env, ["manage.py", "migrate", "--noinput"], what="migrate")
        http_ready(f"http://{HOST}:{port}/healthz", proc=receiver, timeout=30)
        os.environ.clear()
        os.environ.update(env)
        print(f"bench-ingest: {machine_describe()}; {', '.join(notes)}", flush=True)
        figures = _run(
            args.events,
            f"http://{HOST}:{port}/webhooks",
            drain=args.drain,
            rows=args.rows,
            tenants=args.tenants,
        )
    except Unavailable as exc:
        print(f"bench-ingest: {exc} (logs in {logs})")
        return 1
    finally:
        proc_stop(receiver)
        if "REDIS_URL" not in env:
            manage_run(env, ["-m", "gateway_project.embedded_redis", "stop"], what="Redis stop")
    result = {
        "machine": machine_describe(),
        "when": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        **figures,
        "stores": "; ".join(notes),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    if args.out.resolve() == RESULTS.resolve():
        readme = BENCH_DIR.parent / "README.md"
        readme_update(_readme_line(result), readme=readme, markers=README_MARKERS)
    shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
