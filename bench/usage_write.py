"""How long making a usage event durable takes on the request path: XADD vs a DB insert.

`python -m bench.usage_write` against the configured DATABASE_URL/REDIS_URL (run migrations first).
Both paths are what the proxy would await before the last byte: `usage_event_record` (XADD) and a
single-row insert through `sync_to_async(thread_sensitive=False)`, sequentially and 64 at a time.
"""

from __future__ import annotations

import asyncio
import os
import statistics
import time
from collections.abc import Awaitable, Callable
from typing import Any

import django

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "gateway_project.settings")
django.setup()

from asgiref.sync import sync_to_async  # noqa: E402
from django.conf import settings  # noqa: E402

from billing.models import UsageEvent  # noqa: E402
from billing.services.usage import USAGE_STREAM, usage_event_record  # noqa: E402
from billing.services.usage_store import usage_events_store_direct  # noqa: E402
from gateway_project.kernel.ids import new_ulid  # noqa: E402
from groups.models import Group, Workspace  # noqa: E402
from routing.redis_pool import close_all, main_redis  # noqa: E402

N = 2000


def _fixture() -> Group:
    workspace = Workspace.objects.create(name="bench-usage-write", onboarded=True)
    group = Group(workspace=workspace, external_entity_id=f"bench-{new_ulid()}")
    group.root = group
    group.save()
    return group


def _event(group: Group) -> dict[str, Any]:
    return {
        "idempotencyKey": new_ulid(),
        "timestamp": "2026-05-05T12:00:00.123Z",
        "requestId": new_ulid(),
        "requestMetadata": {},
        "modelSlug": "acme/llama",
        "externalCustomerId": "c",
        "externalEntityId": "c",
        "apiKeyPrefix": "sky_000000000000",
        "groupId": group.id,
        "status": "completed",
        "tokens": {"inputTokens": 10, "outputTokens": 20, "cachedInputTokens": 0},
        "workspaceId": group.workspace_id,
        "usageEstimated": False,
        "httpStatus": 200,
        "target": "OPENAI_COMPATIBLE#0",
        "totalMs": 1.0,
        "upstreamMs": 1.0,
        "firstByteMs": 1.0,
    }


async def _timed(op: Callable[[], Awaitable[None]], concurrency: int) -> list[float]:
    samples: list[float] = []
    todo = iter(range(N))

    async def worker() -> None:
        for _ in todo:
            started = time.perf_counter()
            await op()
            samples.append((time.perf_counter() - started) * 1e6)

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return sorted(samples)


def _line(name: str, concurrency: int, samples: list[float], elapsed: float) -> str:
    p99 = samples[int(len(samples) * 0.99)]
    return (
        f"{name:<28} c{concurrency:<4} p50 {statistics.median(samples):8.0f} us   "
        f"p99 {p99:8.0f} us   {N / elapsed:8.0f} ops/s"
    )


async def _measure(group: Group) -> list[str]:
    client = main_redis()
    store = sync_to_async(usage_events_store_direct, thread_sensitive=False)

    async def xadd() -> None:
        await usage_event_record(client=client, event=_event(group))

    async def insert() -> None:
        await store(events=[_event(group)])

    lines = []
    for name, op in (("XADD (usage_event_record)", xadd), ("DB insert via sync_to_async", insert)):
        for concurrency in (1, 64):
            started = time.perf_counter()
            samples = await _timed(op, concurrency)
            lines.append(_line(name, concurrency, samples, time.perf_counter() - started))
    await client.delete(USAGE_STREAM)
    await close_all()
    return lines


def main() -> None:
    """Entry point."""
    group = _fixture()
    try:
        lines = asyncio.run(_measure(group))
    finally:
        UsageEvent.objects.filter(group=group).delete()
        Group.objects.filter(id=group.id).update(root=None)
        Group.objects.filter(id=group.id).delete()
        Workspace.objects.filter(id=group.workspace_id).delete()
    engine = settings.DATABASES["default"]["ENGINE"].rsplit(".", 1)[-1]
    print(f"usage event write, {N} events each, database: {engine}")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
