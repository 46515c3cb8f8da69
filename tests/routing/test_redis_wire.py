"""The hot path's Redis commands packed by the gateway: the very bytes redis-py would send, one
round trip on a pooled connection, and a connection whose command was cut short never hands its
late reply to the next command."""

from __future__ import annotations

import asyncio

import pytest
import redis
import redis.asyncio as aioredis
import redis.exceptions as rx
from django.conf import settings

from gateway_project.kernel.redis_wire import command_bulk, command_pack, command_run
from routing.redis_pool import LeanBlockingPool
from tests.waiting import wait_until_async


def _client() -> aioredis.Redis:
    pool = LeanBlockingPool.from_url(settings.REDIS_URL, max_connections=2, timeout=5)
    return aioredis.Redis(connection_pool=pool)


@pytest.mark.parametrize(
    "parts",
    [
        ("EVALSHA", "a" * 40, 2, "rl:{1}:k", "rl:{1}:k2", "admit", "", 60_000_000, -3, 0),
        ("XADD", "gw:usage", "*", "e", b'{"model":"caf\xc3\xa9"}' * 500),
        ("SET", "cl\u00e9 \u2603", b"\x00\r\n\xff", 2**53),
    ],
)
def test_a_packed_command_is_the_bytes_redis_py_sends(parts: tuple[str | bytes | int, ...]) -> None:
    connection = aioredis.Connection()

    ours = command_pack(*parts[1:], packed=(command_bulk(parts[0]),))

    assert ours == b"".join(connection.pack_command(*parts))


@pytest.mark.parametrize("part", [1.5, True, None, ["a"]])
def test_an_argument_of_another_type_is_refused_not_guessed(part: object) -> None:
    with pytest.raises(TypeError, match="bytes, str or int"):
        command_pack("SET", "k", part)  # type: ignore[arg-type]


def test_a_packed_command_runs_and_its_error_reply_raises_redis_py_s_exception() -> None:
    async def scenario() -> tuple[object, object, object]:
        client = _client()
        await command_run(client, command_pack("SET", "gw:test:wire", "value"))
        value = await command_run(client, command_pack("GET", "gw:test:wire"))
        with pytest.raises(rx.NoScriptError):
            await command_run(client, command_pack("EVALSHA", "0" * 40, 0))
        after_error = await command_run(client, command_pack("GET", "gw:test:wire"))
        pool = client.connection_pool
        opened = len(pool._available_connections) + len(pool._in_use_connections)
        await client.aclose()
        return value, after_error, opened

    assert asyncio.run(scenario()) == (b"value", b"value", 1)


def test_a_command_cut_short_leaves_no_late_reply_for_the_next_one() -> None:
    observer = redis.Redis.from_url(settings.REDIS_URL)

    async def scenario() -> tuple[object, object]:
        client, other = _client(), _client()
        await other.delete("gw:test:wire-late")
        await command_run(client, command_pack("SET", "gw:test:wire", "value"))
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.1):
                await command_run(client, command_pack("BLPOP", "gw:test:wire-late", 30))
        await wait_until_async(
            lambda: all(c["cmd"] != "blpop" for c in observer.client_list()),
            what="the cut-short BLPOP's connection closed",
        )
        # Had the connection stayed open, this would be the late reply its next command reads.
        await other.rpush("gw:test:wire-late", "late")

        value = await command_run(client, command_pack("GET", "gw:test:wire"))
        left = await other.lrange("gw:test:wire-late", 0, -1)
        await client.aclose()
        await other.aclose()
        return value, left

    assert asyncio.run(scenario()) == (b"value", [b"late"])
