"""`make bench-admin`: the support admin's pages at a big lab's size.

One run: a fresh PostgreSQL database (`gw_bench_admin`) and Redis database 8 when they answer
(else the embedded defaults), migrated; one workspace and endpoint; then N groups (default
100,000; a tenth of them children), one model access and limit per group, one key per group, one
audit row per group and per key, and one usage event per key, each table filled by one
`INSERT ... SELECT generate_series`, then vacuumed and analysed. A superuser then opens every admin
page a support shift uses through Django's test client (the whole request: middleware, admin, ORM,
templates; no network) and each page's p50/p99 and query count are reported. Writes
bench/results/admin.json and the README's admin line.

    python -m bench.admin [--groups N] [--repeat 20] [--reuse]

`--reuse` measures again on the database the last run generated (same N), without emptying it:
pending migrations are applied and the usage rollup caught up, as a deploy would.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

from bench.gateway import gateway_env, gateway_env_base
from bench.peers import BENCH_DIR
from bench.report import machine_describe, readme_update

DATABASE = "gw_bench_admin"
REDIS_URL = "redis://127.0.0.1:6379/8"
RESULTS = BENCH_DIR / "results" / "admin.json"
README = BENCH_DIR.parent / "README.md"
README_MARKERS = ("<!-- bench:admin -->", "<!-- /bench:admin -->")
TARGET_MS = 300.0
SLUG = "benchadm/model"
# The one page that answers with a redirect: a search naming one customer opens its page. Any
# other redirect is the admin's "invalid page" or a login, so the page did not show.
REDIRECTS = frozenset({"customer search"})


def insert_series(model: Any, *, rows: int, values: dict[str, str]) -> None:
    """INSERT `rows` rows of `model` in one statement: `values` gives SQL expressions of the
    series number `i` for some columns; every other column gets its field's default."""
    from django.db import connection
    from django.db.models import AutoField

    columns, exprs, params = [], [], []
    for field in model._meta.concrete_fields:
        if isinstance(field, AutoField) and field.attname not in values:
            continue  # its sequence numbers the rows
        columns.append(connection.ops.quote_name(field.column))
        if field.attname in values:
            exprs.append(values[field.attname])
        else:
            exprs.append("%s")
            params.append(field.get_db_prep_save(field.get_default(), connection))
    table = connection.ops.quote_name(model._meta.db_table)
    sql = (
        f"INSERT INTO {table} ({', '.join(columns)}) "
        f"SELECT {', '.join(exprs)} FROM generate_series(1, %s) AS i"
    )
    with connection.cursor() as cursor:
        cursor.execute(sql, [*params, rows])


def data_generate(*, groups: int) -> dict[str, str]:
    """The workspace, endpoint and N groups with their access, limits, keys, audit and usage."""
    from django.db import connection

    from billing.models import UsageEvent
    from groups.models import AuditEvent, Group, GroupModel, ModelLimit
    from groups.services import org_prefix_register, workspace_create
    from keys.models import ApiKey
    from routing.services import endpoint_create

    workspace = workspace_create(name="Bench lab", actor="system", onboarded=True)
    org_prefix_register(workspace=workspace, prefix=SLUG.split("/")[0], actor="system")
    target = {"provider": "OPENAI_COMPATIBLE", "base_url": "https://127.0.0.1:9/v1"}
    endpoint_create(
        workspace=workspace, actor="system", slug=SLUG, targets=[{**target, "target_model": "m"}]
    )
    ws = f"'{workspace.pk}'"
    gid = "'grp_bench' || lpad(i::text, 9, '0')"
    # Every tenth group is a child of the group before it (depth 2), the rest are roots.
    child = "i %% 10 = 0"
    insert_series(
        Group,
        rows=groups,
        values={
            "id": gid,
            "workspace_id": ws,
            "parent_id": f"CASE WHEN {child} THEN 'grp_bench' || lpad((i - 1)::text, 9, '0') END",
            "root_id": f"CASE WHEN {child} THEN 'grp_bench' || lpad((i - 1)::text, 9, '0') "
            f"ELSE {gid} END",
            "depth": f"CASE WHEN {child} THEN 2 ELSE 1 END",
            "name": "'Customer ' || i",
            "external_entity_id": "'cust-' || lpad(i::text, 7, '0')",
            "created_at": "now() - (i || ' seconds')::interval",
            "updated_at": "now()",
        },
    )
    insert_series(
        GroupModel,
        rows=groups,
        values={"group_id": gid, "slug": f"'{SLUG}'", "position": "0"},
    )
    insert_series(
        ModelLimit,
        rows=groups,
        values={
            "access_id": f"(SELECT id FROM groups_groupmodel WHERE group_id = {gid})",
            "kind": "'RATE'",
            "type": "'REQUEST'",
            "unit": "'MINUTE'",
            "threshold": f"CASE WHEN {child} THEN 300 ELSE 600 END",
        },
    )
    insert_series(
        ApiKey,
        rows=groups,
        values={
            "id": "'key_bench' || lpad(i::text, 9, '0')",
            "workspace_id": ws,
            "group_id": gid,
            "prefix": "'sky_' || lpad(i::text, 12, '0')",
            "key_hash": "encode(sha256(('bench-key-' || i)::bytea), 'hex')",
            "name": "'key of customer ' || i",
            "created_at": "now() - (i || ' seconds')::interval",
        },
    )
    for kind, object_id in (("group", gid), ("api_key", "'key_bench' || lpad(i::text, 9, '0')")):
        insert_series(
            AuditEvent,
            rows=groups,
            values={
                "id": f"'aud_{kind}' || lpad(i::text, 9, '0')",
                "workspace_id": ws,
                "actor": "'mgmt:bench'",
                "action": f"'{kind}.create'",
                "object_type": f"'{kind}'",
                "object_id": object_id,
                "created_at": "now() - (i || ' seconds')::interval",
            },
        )
    insert_series(
        UsageEvent,
        rows=groups,
        values={
            "idempotency_key": "'01BENCH' || lpad(i::text, 19, '0')",
            "request_id": "'req-bench-' || i",
            "timestamp": "now() - (i || ' seconds')::interval",
            "workspace_id": ws,
            "group_id": gid,
            "external_entity_id": "'cust-' || lpad(i::text, 7, '0')",
            "api_key_prefix": "'sky_' || lpad(i::text, 12, '0')",
            "model_slug": f"'{SLUG}'",
            "status": "'completed'",
            "input_tokens": "100 + i %% 50",
            "output_tokens": "200 + i %% 70",
            "batched_at": "now()",
            "created_at": "now() - (i || ' seconds')::interval",
        },
    )
    with connection.cursor() as cursor:
        # What autovacuum does to a table after a bulk load: statistics and the visibility map.
        for model in (Group, GroupModel, ModelLimit, ApiKey, AuditEvent, UsageEvent):
            cursor.execute(f"VACUUM ANALYZE {connection.ops.quote_name(model._meta.db_table)}")
    return bench_ids(groups=groups)


def bench_ids(*, groups: int) -> dict[str, str]:
    """The ids of the workspace, endpoint, groups, key and customer the pages open."""
    from groups.models import Workspace

    workspace = Workspace.objects.get(name="Bench lab")
    sample = groups // 2 - (groups // 2) % 10 + 1  # a root group in the middle of the table
    return {
        "workspace": workspace.pk,
        "group": f"grp_bench{sample:09d}",
        "child": f"grp_bench{sample + 9:09d}",
        "external_id": f"cust-{sample:07d}",
        "key": f"key_bench{sample:09d}",
        "prefix": f"sky_{sample:012d}",
        "endpoint": str(endpoint_id()),
    }


def reused_env(*, tmp: Path) -> tuple[dict[str, str], list[str]]:
    """The environment of a run on the database and Redis the last run filled, left as they are."""
    env = gateway_env_base(tmp=tmp) | {
        "DATABASE_URL": f"postgres://postgres@127.0.0.1:5432/{DATABASE}",
        "REDIS_URL": REDIS_URL,
    }
    return env, [f"PostgreSQL {DATABASE} (reused)", f"Redis {REDIS_URL}"]


def rollup_catch_up() -> float:
    """Seconds the usage rollup took to count the generated events (what beat does each minute)."""
    from billing.services.rollup import usage_rollup_advance

    started = time.perf_counter()
    while usage_rollup_advance():
        pass
    return time.perf_counter() - started


def endpoint_id() -> str:
    """The bench endpoint's id."""
    from routing.models import Endpoint

    return str(Endpoint.objects.get(slug=SLUG).pk)


def admin_pages(ids: dict[str, str]) -> dict[str, str]:
    """Page name -> URL: the lists, searches, forms and dashboards support opens."""
    grp, key, ext, prefix = ids["group"], ids["key"], ids["external_id"], ids["prefix"]
    auto = "/admin/autocomplete/?app_label=keys&model_name=apikey&field_name=group&term="
    return {
        "groups list": "/admin/groups/group/",
        "groups list, live": "/admin/groups/group/?state=live",
        "groups list, page 500": "/admin/groups/group/?p=500",
        "groups list, depth 2": "/admin/groups/group/?depth=2",
        "groups search external id": f"/admin/groups/group/?q={ext}",
        "groups search name prefix": "/admin/groups/group/?q=customer+5000",
        "group change form": f"/admin/groups/group/{grp}/change/",
        "group add form": "/admin/groups/group/add/",
        "group limits form": f"/admin/groups/group/{grp}/limits/",
        "keys list": "/admin/keys/apikey/",
        "keys list, live": "/admin/keys/apikey/?revoked_at__isnull=True",
        "keys search prefix": f"/admin/keys/apikey/?q={prefix[:10]}",
        "keys search external id": f"/admin/keys/apikey/?q={ext}",
        "key change form": f"/admin/keys/apikey/{key}/change/",
        "key add form": "/admin/keys/apikey/add/",
        "key revoke page": f"/admin/keys/apikey/{key}/revoke/",
        "group autocomplete": f"{auto}{ext[:9]}",
        "workspaces list": "/admin/groups/workspace/",
        "workspace change form": f"/admin/groups/workspace/{ids['workspace']}/change/",
        "audit list": "/admin/groups/auditevent/",
        "audit search": f"/admin/groups/auditevent/?q={grp}",
        "endpoints list": "/admin/routing/endpoint/",
        "endpoint change form": f"/admin/routing/endpoint/{ids['endpoint']}/change/",
        "endpoint add form": "/admin/routing/endpoint/add/",
        "usage events list": "/admin/billing/usageevent/",
        "usage events search prefix": f"/admin/billing/usageevent/?q={prefix}",
        "usage dashboard": f"/admin/billing/usageevent/dashboard/?workspace={ids['workspace']}",
        "usage dashboard, group": (
            f"/admin/billing/usageevent/dashboard/?workspace={ids['workspace']}&group={ext}"
        ),
        "deliveries list": "/admin/billing/webhookdelivery/",
        "deliveries recover form": "/admin/billing/webhookdelivery/recover/",
        "customer search": f"/admin/customers/?q={prefix}",
        "customer page": f"/admin/customers/{grp}/",
        "customer page, child": f"/admin/customers/{ids['child']}/",
        "support console": "/admin/",
    }


def page_time(get: Callable[[], Any], *, repeat: int) -> dict[str, Any]:
    """p50/p99 of `repeat` GETs after one warm-up, with the page's status, its query count and
    the p50 of the time spent in the database (the rest is Python: a loaded CPU shows there)."""
    from django.db import connection

    queries: list[str] = []
    in_database = [0.0]

    def timed(execute: Callable[..., Any], sql: str, *args: Any) -> Any:
        started = time.perf_counter()
        try:
            return execute(sql, *args)
        finally:
            queries.append(sql)
            in_database[0] += time.perf_counter() - started

    timings, database = [], []
    with connection.execute_wrapper(timed):
        first = get()
        count = len(queries)
        for _ in range(repeat):
            in_database[0] = 0.0
            started = time.perf_counter()
            response = get()
            timings.append(time.perf_counter() - started)
            database.append(in_database[0])
    ordered = sorted(timings)
    return {
        "status": first.status_code,
        "final_status": response.status_code,
        "queries": count,
        "bytes": len(first.content),
        "p50_ms": round(statistics.median(ordered) * 1000, 1),
        "p99_ms": round(ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))] * 1000, 1),
        "db_p50_ms": round(statistics.median(database) * 1000, 1),
    }


def page_failed(name: str, row: dict[str, Any]) -> bool:
    """An error, or a redirect where the page itself was expected."""
    return bool(row["status"] >= 400 or (row["status"] >= 300 and name not in REDIRECTS))


def pages_measure(ids: dict[str, str], *, repeat: int) -> dict[str, dict[str, Any]]:
    """Every page of `admin_pages`, timed as a logged-in superuser."""
    from django.contrib.auth import get_user_model
    from django.test import Client

    users = get_user_model().objects
    user = users.filter(username="bench").first() or users.create_superuser(
        "bench", "bench@example.com", "bench-pass"
    )
    client = Client()
    client.force_login(user)
    results = {}
    for name, url in admin_pages(ids).items():
        results[name] = page_time(partial(client.get, url), repeat=repeat)
        row = results[name]
        slow = "  SLOW" if row["p50_ms"] > TARGET_MS or page_failed(name, row) else ""
        print(
            f"  {name:32} {row['status']} p50 {row['p50_ms']:7.1f} ms  p99 {row['p99_ms']:7.1f} ms"
            f"  {row['queries']:3d} queries, {row['db_p50_ms']:6.1f} ms in SQL{slow}",
            flush=True,
        )
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--groups", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=20)
    parser.add_argument(
        "--reuse", action="store_true", help="measure on the last run's database as it is"
    )
    args = parser.parse_args(argv)
    tmp = Path(tempfile.mkdtemp(prefix="bench-admin-"))
    if args.reuse:
        env, notes = reused_env(tmp=tmp)
    else:
        env, notes = gateway_env(tmp=tmp, database=DATABASE, redis_url=REDIS_URL)
    os.environ.update(env)
    os.environ.pop("GATEWAY_DB_POOL", None)
    import django
    from django.core.management import call_command

    django.setup()
    call_command("migrate", verbosity=0)
    started = time.perf_counter()
    if args.reuse:
        ids = bench_ids(groups=args.groups)
    else:
        ids = data_generate(groups=args.groups)
        print(f"generated {args.groups:,} groups and keys ({', '.join(notes)})", flush=True)
    generated = time.perf_counter() - started
    rolled = rollup_catch_up()
    print(f"data ready in {generated:.1f} s; usage rollup caught up in {rolled:.1f} s", flush=True)
    pages = pages_measure(ids, repeat=args.repeat)
    record = {
        "machine": machine_describe(),
        "when": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "groups": args.groups,
        "keys": args.groups,
        "stores": notes,
        "generate_s": round(generated, 1),
        "rollup_catch_up_s": round(rolled, 1),
        # Other work on the machine slows the Python side of every page (db_p50_ms shows SQL's).
        "load_average_1m": round(os.getloadavg()[0], 1),
        "target_ms": TARGET_MS,
        "pages": pages,
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(record, indent=2) + "\n")
    readme_update(readme_line(record), readme=README, markers=README_MARKERS)
    slow = [name for name, row in pages.items() if row["p50_ms"] > TARGET_MS]
    failed = [name for name, row in pages.items() if page_failed(name, row)]
    print(f"wrote {RESULTS}; over {TARGET_MS:.0f} ms: {slow or 'none'}; failed: {failed or 'none'}")
    return 1 if failed else 0


def readme_line(record: dict[str, Any]) -> str:
    """The README's line: the slowest pages and the target."""
    pages = record["pages"]
    worst = sorted(pages.items(), key=lambda item: -item[1]["p50_ms"])[:3]
    slowest = ", ".join(
        f"{name} {row['p50_ms']} ms ({row['db_p50_ms']} ms in SQL)" for name, row in worst
    )
    over = sum(1 for row in pages.values() if row["p50_ms"] > record["target_ms"])
    return (
        f"Latest `make bench-admin` ({record['when']}, {record['groups']:,} groups and "
        f"{record['keys']:,} keys, {'; '.join(record['stores'])}, load average "
        f"{record['load_average_1m']}): {len(pages)} admin pages, "
        f"{over} over {record['target_ms']:.0f} ms at p50; slowest p50: {slowest}; all figures "
        "in [bench/results/admin.json](bench/results/admin.json).\n"
    )


if __name__ == "__main__":
    sys.exit(main())
