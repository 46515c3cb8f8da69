"""Redis commands on the request path as bytes: packed by us, sent on a pooled connection.

redis-py's `execute_command` encodes every argument through its Encoder (several isinstance
checks each), wraps the round trip in its retry closure and awaits its observability hooks; for
the two scripts a request runs, with some thirty arguments between them, that is a large share of
the CPU the request costs this process. `command_pack` builds the same RESP bytes from the three
argument types those scripts take, and parts that never change (a script's SHA1, its keys) can be
packed once and joined. `command_run` sends and reads with the connection's own methods, which
close a connection whose write or read failed or was cut short, as redis-py does; it makes no
retry, as redis-py makes none by default.
"""

from __future__ import annotations

from typing import Any

Part = bytes | str | int


def command_bulk(part: Part) -> bytes:
    """One argument as a RESP bulk string (str as UTF-8, int in decimal; nothing else)."""
    if type(part) is str:
        part = part.encode()
    elif type(part) is int:
        part = b"%d" % part
    elif type(part) is not bytes:
        raise TypeError(f"a Redis argument must be bytes, str or int, not {type(part).__name__}")
    return b"$%d\r\n%b\r\n" % (len(part), part)


def command_pack(*parts: Part, packed: tuple[bytes, ...] = ()) -> bytes:
    """The RESP array of `packed` (bulk strings packed already, sent first) and `parts`."""
    head = b"*%d\r\n" % (len(packed) + len(parts))
    return b"".join((head, *packed, *map(command_bulk, parts)))


async def command_run(client: Any, command: bytes) -> Any:
    """Send one packed command and return its reply (an error reply raises its redis-py
    exception, such as NoScriptError): on the pool's multiplexed connection when it has one
    (gateway_project/kernel/redis_mux.py), else on a connection of `client`'s pool."""
    pool = client.connection_pool
    mux = getattr(pool, "mux", None)
    if mux is not None:
        return await mux.run(command)
    connection = await pool.get_connection()
    try:
        await connection.send_packed_command(command, check_health=False)
        return await connection.read_response()
    finally:
        await pool.release(connection)
