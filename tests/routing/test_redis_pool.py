"""The hot path's Redis pool lends an idle connection at once, yet still opens a closed one again
and still makes a command wait for a connection when every one is lent."""

from __future__ import annotations

import asyncio

from django.conf import settings

from routing.redis_pool import LeanBlockingPool


def _client(max_connections: int) -> tuple[LeanBlockingPool, object]:
    import redis.asyncio as aioredis

    pool = LeanBlockingPool.from_url(settings.REDIS_URL, max_connections=max_connections, timeout=5)
    return pool, aioredis.Redis(connection_pool=pool)


def test_commands_reuse_one_idle_connection() -> None:
    async def scenario() -> int:
        pool, client = _client(max_connections=4)
        for _ in range(5):
            assert await client.ping() is True  # type: ignore[attr-defined]
        created = len(pool._available_connections) + len(pool._in_use_connections)
        await pool.aclose()
        return created

    assert asyncio.run(scenario()) == 1


def test_a_closed_connection_is_opened_again_before_it_is_lent() -> None:
    async def scenario() -> bytes:
        pool, client = _client(max_connections=1)
        await client.set("gw:test:pool", "fresh")  # type: ignore[attr-defined]
        connection = await pool.get_connection()
        await connection.disconnect()
        await pool.release(connection)

        value = await client.get("gw:test:pool")  # type: ignore[attr-defined]
        await pool.aclose()
        return value

    assert asyncio.run(scenario()) == b"fresh"


def test_a_command_waits_for_a_lent_connection_and_gets_it_when_returned() -> None:
    async def scenario() -> list[str]:
        pool, client = _client(max_connections=1)
        await client.ping()  # type: ignore[attr-defined]
        lent = await pool.get_connection()
        order: list[str] = []

        async def command() -> None:
            await client.ping()  # type: ignore[attr-defined]
            order.append("command")

        waiting = asyncio.create_task(command())
        await asyncio.sleep(0.05)
        order.append("returned")
        await pool.release(lent)
        await asyncio.wait_for(waiting, 5)
        await pool.aclose()
        return order

    assert asyncio.run(scenario()) == ["returned", "command"]
