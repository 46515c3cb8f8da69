"""The hot path's Redis commands packed by the gateway: the very bytes redis-py would send, run on
one multiplexed connection per process: concurrent commands share it and each gets its own reply,
an error reply fails its command alone, a command cut short never hands its late reply to another,
and a connection that breaks or stops answering fails its commands and is replaced."""

from __future__ import annotations

import asyncio

import pytest
import redis
import redis.asyncio as aioredis
import redis.exceptions as rx
from django.conf import settings
from redis.asyncio.connection import parse_url

from gateway_project.kernel.redis_mux import RedisMux
from gateway_project.kernel.redis_wire import command_bulk, command_pack, command_run
from routing.redis_pool import LeanBlockingPool
from tests.fakes.redis_relay import RedisRelay
from tests.waiting import wait_until_async


def _client(*, stall: float = 5.0, max_waiting: int = 0, **options: object) -> aioredis.Redis:
    """A client of the hot path's pool on REDIS_URL (TCP or unix socket), `options` overriding
    the URL's (user, password, database); `stall` or `max_waiting` give it a mux of its own."""
    pool = LeanBlockingPool(
        max_connections=2, timeout=5, **{**parse_url(settings.REDIS_URL), **options}
    )
    if stall != 5.0 or max_waiting:
        pool.mux = RedisMux(pool.make_connection, stall=stall, max_waiting=max_waiting or 100)
    return aioredis.Redis(connection_pool=pool)


async def _closed(*clients: aioredis.Redis) -> None:
    for client in clients:
        await client.connection_pool.disconnect()
        await client.aclose()


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
        lent = len(pool._available_connections) + len(pool._in_use_connections)
        await _closed(client)
        return value, after_error, lent

    # The pool lends none of its connections: the commands ran on the multiplexed one.
    assert asyncio.run(scenario()) == (b"value", b"value", 0)


def test_concurrent_commands_share_one_connection_and_each_gets_its_own_reply() -> None:
    async def scenario() -> tuple[list[object], set[object]]:
        client = _client()

        async def echo(n: int) -> tuple[object, object]:
            await asyncio.sleep(0.001 * (n % 3))
            reply = await command_run(client, command_pack("ECHO", f"reply-{n}"))
            return reply, await command_run(client, command_pack("CLIENT", "ID"))

        results = await asyncio.gather(*(echo(n) for n in range(300)))
        await _closed(client)
        return [reply for reply, _ in results], {client_id for _, client_id in results}

    replies, client_ids = asyncio.run(scenario())

    assert replies == [f"reply-{n}".encode() for n in range(300)]
    assert len(client_ids) == 1


def test_commands_issued_while_others_are_in_flight_reach_redis_together() -> None:
    observer = redis.Redis.from_url(settings.REDIS_URL)

    def reads() -> int:
        return int(observer.info("stats")["total_reads_processed"])

    async def scenario() -> tuple[int, list[object]]:
        client = _client()
        await command_run(client, command_pack("PING"))  # connected
        before = reads()
        replies = await asyncio.gather(
            *(command_run(client, command_pack("ECHO", str(n))) for n in range(200))
        )
        spent = reads() - before - 1  # the observer's own INFO is a read too
        await _closed(client)
        return spent, replies

    spent, replies = asyncio.run(scenario())
    observer.close()

    assert replies == [str(n).encode() for n in range(200)]
    # One write for the first command, one for the 199 issued while it was in flight (Redis may
    # take a large write in a few reads); a write per command would be 200 reads.
    assert spent <= 10, spent


def test_a_command_cut_short_leaves_no_late_reply_for_the_next_one() -> None:
    async def scenario() -> tuple[object, object]:
        client, other = _client(), _client()
        await command_run(other, command_pack("DEL", "gw:test:wire-late"))
        await command_run(client, command_pack("SET", "gw:test:wire", "value"))
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.1):
                await command_run(client, command_pack("BLPOP", "gw:test:wire-late", 30))
        # The BLPOP's caller has gone; Redis now answers it on the shared connection.
        await command_run(other, command_pack("RPUSH", "gw:test:wire-late", "late"))

        value = await command_run(client, command_pack("GET", "gw:test:wire"))
        left = await command_run(other, command_pack("LRANGE", "gw:test:wire-late", 0, -1))
        await _closed(client, other)
        return value, left

    # The late reply (the popped "late") went to nobody; the GET read its own.
    assert asyncio.run(scenario()) == (b"value", [])


def test_a_connection_killed_fails_its_waiting_commands_and_the_next_one_reconnects() -> None:
    async def scenario() -> tuple[object, object, object]:
        client, other = _client(), _client()
        first_id = await command_run(client, command_pack("CLIENT", "ID"))
        waiting = asyncio.ensure_future(
            command_run(client, command_pack("BLPOP", "gw:test:wire-never", 30))
        )
        await wait_until_async(
            lambda: waiting.done() or _blocked(first_id), what="the BLPOP blocked in Redis"
        )
        await command_run(other, command_pack("CLIENT", "KILL", "ID", first_id))
        with pytest.raises(rx.ConnectionError):
            await waiting
        second_id = await command_run(client, command_pack("CLIENT", "ID"))
        value = await command_run(client, command_pack("ECHO", "after"))
        await _closed(client, other)
        return first_id != second_id, value, type(second_id)

    assert asyncio.run(scenario()) == (True, b"after", int)


def _blocked(client_id: object) -> bool:
    observer = redis.Redis.from_url(settings.REDIS_URL)
    try:
        return any(
            c["id"] == str(client_id) and c["cmd"] == "blpop" for c in observer.client_list()
        )
    finally:
        observer.close()


def test_a_redis_that_stops_answering_is_dropped_once_the_oldest_command_waited_too_long() -> None:
    async def scenario() -> tuple[object, object, object]:
        client = _client(stall=0.2)
        first_id = await command_run(client, command_pack("CLIENT", "ID"))
        # A command Redis holds (as a hung Redis would): its caller gives up.
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.05):
                await command_run(client, command_pack("BLPOP", "gw:test:wire-never", 30))
        # Queued behind it, this one would wait 30 s; past the stall bound the connection goes.
        await asyncio.sleep(0.25)
        second_id = await command_run(client, command_pack("CLIENT", "ID"))
        value = await command_run(client, command_pack("ECHO", "after"))
        await _closed(client)
        return first_id != second_id, value, second_id is not None

    assert asyncio.run(scenario()) == (True, b"after", True)


def test_past_the_bound_of_waiting_commands_a_new_one_fails_at_once() -> None:
    async def scenario() -> object:
        client = _client(max_waiting=2)
        await command_run(client, command_pack("PING"))
        held = [
            asyncio.ensure_future(
                command_run(client, command_pack("BLPOP", f"gw:test:wire-never{n}", 30))
            )
            for n in range(2)
        ]
        await asyncio.sleep(0)
        with pytest.raises(rx.ConnectionError, match="waiting"):
            await command_run(client, command_pack("PING"))
        await _closed(client)
        outcomes = await asyncio.gather(*held, return_exceptions=True)
        return [type(outcome) for outcome in outcomes]

    # Closing the connection fails what still waits on it.
    assert asyncio.run(scenario()) == [rx.ConnectionError, rx.ConnectionError]


def test_the_connection_authenticates_and_selects_the_url_s_database() -> None:
    admin = redis.Redis.from_url(settings.REDIS_URL)
    admin.acl_setuser(
        "gw-test-mux", enabled=True, passwords=["+mux-secret"], keys=["*"], commands=["+@all"]
    )

    async def scenario() -> tuple[object, object]:
        client = _client(username="gw-test-mux", password="mux-secret", db=13)
        wrong = _client(username="gw-test-mux", password="not-it", db=13)
        who = await command_run(client, command_pack("ACL", "WHOAMI"))
        info = await command_run(client, command_pack("CLIENT", "INFO"))
        with pytest.raises(rx.ConnectionError, match="username-password"):
            await command_run(wrong, command_pack("PING"))
        await _closed(client, wrong)
        return who, b" db=13 " in info

    try:
        assert asyncio.run(scenario()) == (b"gw-test-mux", True)
    finally:
        admin.acl_deluser("gw-test-mux")


def test_a_dropped_connection_s_late_bytes_and_loss_never_reach_its_successor() -> None:
    async def scenario() -> tuple[object, object]:
        client = _client()
        pool = client.connection_pool
        assert isinstance(pool, LeanBlockingPool)
        mux = pool.mux
        await command_run(client, command_pack("PING"))
        old = mux._wire
        assert old is not None
        await mux.close()
        await command_run(client, command_pack("PING"))  # a new connection
        # What the old socket may still report after it was dropped.
        old.data_received(b"+late reply\r\n")
        old.connection_lost(OSError("reset"))
        value = await command_run(client, command_pack("ECHO", "mine"))
        replaced = mux._wire is not old and mux._wire is not None
        await _closed(client)
        return value, replaced

    assert asyncio.run(scenario()) == (b"mine", True)


def test_a_client_used_from_another_event_loop_connects_afresh_there() -> None:
    client = _client()

    async def once(text: str) -> object:
        return await command_run(client, command_pack("ECHO", text))

    first = asyncio.run(once("first loop"))
    second = asyncio.run(once("second loop"))
    asyncio.run(_closed(client))

    assert (first, second) == (b"first loop", b"second loop")


def test_a_connect_whose_handshake_gets_no_answer_gives_up_and_a_later_command_connects() -> None:
    with RedisRelay(settings.REDIS_URL) as relay:
        relay.blackhole(new_connections=True)  # connections are accepted, then never answered

        async def scenario() -> object:
            pool = LeanBlockingPool.from_url(relay.url, max_connections=2, timeout=5)
            pool.mux = RedisMux(pool.make_connection, stall=0.3, max_waiting=100)
            client = aioredis.Redis(connection_pool=pool)
            async with asyncio.timeout(5):  # without the bound, the first command hangs
                with pytest.raises(rx.ConnectionError):
                    await command_run(client, command_pack("PING"))
                relay.restore()
                value = await command_run(client, command_pack("ECHO", "connected"))
            await _closed(client)
            return value

        assert asyncio.run(scenario()) == b"connected"


def test_a_write_the_event_loop_refuses_fails_the_commands_at_once() -> None:
    """uvloop raises on a write to a socket it already closed; the commands waiting on that
    connection fail at once instead of waiting for the stall bound."""

    class ClosedTransport:  # the edge: a transport whose socket the loop already closed
        def write(self, data: bytes) -> None:
            raise RuntimeError("unable to perform operation on <TCPTransport closed=True>")

        def abort(self) -> None:
            pass

    async def scenario() -> tuple[object, object]:
        client = _client()
        pool = client.connection_pool
        assert isinstance(pool, LeanBlockingPool)
        await command_run(client, command_pack("PING"))
        wire = pool.mux._wire
        assert wire is not None
        real, wire.transport = wire.transport, ClosedTransport()  # type: ignore[assignment]
        async with asyncio.timeout(2):
            with pytest.raises(rx.ConnectionError, match="closed=True") as refused:
                await command_run(client, command_pack("PING"))
        real.close()
        after = await command_run(client, command_pack("ECHO", "reconnected"))
        await _closed(client)
        return type(refused.value), after

    assert asyncio.run(scenario()) == (rx.ConnectionError, b"reconnected")
