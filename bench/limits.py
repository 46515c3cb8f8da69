"""Micro-benchmark of the limits engine: limits_admit throughput with 0, 2 and 8 limits per request.

Run against the Redis the settings point at (GATEWAY_LIMITS_REDIS_URL, default REDIS_URL):
    REDIS_URL=redis://127.0.0.1:6379/5 .venv/bin/python -m bench.limits [--seconds 3]
One process, one event loop: this measures the per-call cost (client + one EVALSHA), not the
Redis ceiling. Every admission fits (huge thresholds), so each call is a full check-and-charge.
Keys live under `rl:{bench-...}` and are deleted afterwards; nothing else is touched.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import time
import uuid

import django


def _chain(size: int, root: str) -> list:
    from groups.selectors import EnforcedLimit

    limits = []
    for depth in range(size // 2):
        group = f"{root}-g{depth}"
        limits.append(EnforcedLimit(group, root, "RATE", "REQUEST", "MINUTE", 10**9))
        limits.append(EnforcedLimit(group, root, "RATE", "TOKEN", "MINUTE", 10**12))
    return limits


async def _worker(limits: list, deadline: float, latencies: list[float]) -> None:
    from routing.admission import limits_admit

    while (started := time.perf_counter()) < deadline:
        admission = await limits_admit(limits=limits, reserve_tokens=500, slug="bench/model")
        assert admission.allowed
        latencies.append(time.perf_counter() - started)


async def _evalsha_stats() -> tuple[int, int]:
    """Calls and microseconds Redis spent in EVALSHA so far (single node; zeros on a cluster)."""
    from redis.asyncio import Redis

    from routing.redis_pool import limits_redis

    client = limits_redis()
    if not isinstance(client, Redis):
        return 0, 0
    stats = (await client.info("commandstats")).get("cmdstat_evalsha", {})
    return int(stats.get("calls", 0)), int(stats.get("usec", 0))


async def _measure(size: int, *, seconds: float, concurrency: int) -> dict[str, float]:
    limits = _chain(size, f"bench-{uuid.uuid4().hex[:8]}")
    await _worker(limits, time.perf_counter() + 0.3, [])  # warm up: connections, script load
    latencies: list[float] = []
    calls_before, usec_before = await _evalsha_stats()
    started = time.perf_counter()
    deadline = started + seconds
    await asyncio.gather(*(_worker(limits, deadline, latencies) for _ in range(concurrency)))
    elapsed = time.perf_counter() - started
    calls_after, usec_after = await _evalsha_stats()
    quantiles = statistics.quantiles(latencies, n=100)
    calls = calls_after - calls_before
    return {
        "ops": len(latencies) / elapsed,
        "p50": quantiles[49] * 1000,
        "p99": quantiles[98] * 1000,
        "redis_us": (usec_after - usec_before) / calls if calls else 0.0,
    }


async def _cleanup() -> None:
    from routing.redis_pool import close_all, limits_redis

    client = limits_redis()
    async for key in client.scan_iter(match="rl:{bench-*"):
        await client.delete(key)
    await close_all()


async def _run(*, seconds: float, concurrency: int) -> None:
    try:
        for size in (0, 2, 8):
            m = await _measure(size, seconds=seconds, concurrency=concurrency)
            print(
                f"{size} limits: {m['ops']:9,.0f} admits/s   p50 {m['p50']:6.2f} ms   "
                f"p99 {m['p99']:6.2f} ms   Redis {m['redis_us']:5.1f} us/script"
            )
    finally:
        await _cleanup()


def main() -> None:
    """Print admit throughput for chains of 0, 2 and 8 limits."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--concurrency", type=int, default=32)
    args = parser.parse_args()
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "gateway_project.settings")
    django.setup()
    from django.conf import settings

    print(f"limits Redis: {settings.GATEWAY_LIMITS_REDIS_URL}; concurrency {args.concurrency}")
    asyncio.run(_run(seconds=args.seconds, concurrency=args.concurrency))


if __name__ == "__main__":
    main()
