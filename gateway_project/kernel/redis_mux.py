"""The request path's Redis commands multiplexed on one connection per process and Redis.

With a pooled connection per command, every request's two scripts cost a write and a read system
call each on both sides, and wake Redis once per command. Here a command goes out at once when
none is in flight; those issued while some are go out together at the end of the event-loop step.
Redis answers a connection's commands in the order it read them, so each reply goes to the
command at the head of the queue: the requests of a busy process share writes, reads and
wake-ups of Redis. Redis runs commands one at a time whatever connection they come on, so the
shared connection makes no command wait behind another that it would not have waited for anyway.

The connection is made by redis-py (its URL's address, TLS, AUTH, database and handshake), then
its socket is read by a protocol of our own with hiredis, without a task per reply. Safety:

- A caller that gives up (its deadline passed, its client left) leaves its place in the queue:
  its reply, when it comes, is dropped; no other command ever reads it.
- An error reply raises redis-py's own exception for that command alone (NoScriptError,
  ResponseError); the connection carries on.
- A connection that fails, closes or sends what is not RESP fails every command waiting on it
  with a ConnectionError, and the next command opens a new one.
- A Redis that stops answering: once the oldest command waiting has waited `stall` seconds
  (longer than any caller waits), the connection is dropped and its commands failed, so the queue
  never grows for longer than that; past `max_waiting` commands a new one fails at once.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable
from typing import Any

import hiredis
from redis._parsers import BaseParser
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import InvalidResponse

ConnectionFactory = Callable[[], Any]  # a redis-py asyncio Connection, not connected yet
_NOT_YET = object()  # hiredis: no complete reply buffered


class RedisMux(asyncio.Protocol):
    """One process's connection to one Redis for packed commands (`run`)."""

    def __init__(
        self, connection_factory: ConnectionFactory, *, stall: float, max_waiting: int
    ) -> None:
        self._factory = connection_factory
        self._stall = stall
        self._max_waiting = max_waiting
        self._loop: asyncio.AbstractEventLoop | None = None
        self._transport: asyncio.Transport | None = None
        self._connecting: asyncio.Task[None] | None = None
        self._reader: Any = None
        self._streams: tuple[Any, Any] | None = None
        # One (future, when queued) per command written or to write, in order.
        self._waiting: deque[tuple[asyncio.Future[Any], float]] = deque()
        self._out: list[bytes] = []
        self._flush_due = False

    async def run(self, command: bytes) -> Any:
        """Send one packed command and return its reply (an error reply raises)."""
        loop = self._loop
        if loop is None:
            loop = self._loop = asyncio.get_running_loop()
        waiting = self._waiting
        now = loop.time()
        if waiting:
            if now - waiting[0][1] > self._stall:
                self._fail(RedisConnectionError(f"Redis did not answer in {self._stall:g} s."))
            elif len(waiting) >= self._max_waiting:
                raise RedisConnectionError(
                    f"{len(waiting)} Redis commands are waiting for an answer already."
                )
        future: asyncio.Future[Any] = loop.create_future()
        transport = self._transport
        if transport is not None and not waiting:
            # Nothing in flight: out at once (a lone request's command waits for no other).
            waiting.append((future, now))
            transport.write(command)
            return await future
        waiting.append((future, now))
        self._out.append(command)
        if transport is not None:
            if not self._flush_due:
                self._flush_due = True
                loop.call_soon(self._flush)
        elif self._connecting is None:
            self._connecting = loop.create_task(self._connect())
        return await future

    async def close(self) -> None:
        """Close the connection (commands still waiting fail); a later command opens another."""
        connecting = self._connecting
        if connecting is not None:
            connecting.cancel()
            await asyncio.gather(connecting, return_exceptions=True)
        self._fail(RedisConnectionError("The Redis connection is closed."))

    # The connection's lifetime.

    async def _connect(self) -> None:
        try:
            connection = self._factory()
            await connection.connect()
            # Take the connected socket from redis-py: its streams are dropped and the
            # connection object forgets them (so it never closes the socket behind us).
            reader, writer = connection._reader, connection._writer
            connection._reader = connection._writer = None
            # Kept while the socket is ours: a StreamWriter closes its transport when collected.
            self._streams = (reader, writer)
            transport = writer.transport
            self._reader = hiredis.Reader(
                protocolError=InvalidResponse,
                replyError=BaseParser.parse_error,
                notEnoughData=_NOT_YET,
            )
            self._transport = transport
            transport.set_protocol(self)
            left = bytes(reader._buffer)
            if left:
                self.data_received(left)
        except asyncio.CancelledError:
            self._connecting = None
            raise
        except Exception as exc:  # noqa: BLE001 - any failure to connect fails its commands
            self._connecting = None
            self._fail(exc if isinstance(exc, RedisConnectionError) else _lost(exc))
            return
        self._connecting = None
        if self._transport is not None:
            self._flush()

    def _flush(self) -> None:
        self._flush_due = False
        transport, out = self._transport, self._out
        if transport is None or not out:
            return
        data = out[0] if len(out) == 1 else b"".join(out)
        out.clear()
        transport.write(data)

    def _fail(self, error: Exception) -> None:
        """Drop the connection and fail every command waiting on it."""
        transport, self._transport, self._reader = self._transport, None, None
        self._streams = None
        self._out.clear()
        waiting = list(self._waiting)
        self._waiting.clear()
        if transport is not None:
            transport.abort()
        for future, _ in waiting:
            if not future.done():
                future.set_exception(_copy(error))

    # asyncio.Protocol, on the taken-over socket.

    def data_received(self, data: bytes) -> None:
        reader = self._reader
        if reader is None:
            return
        reader.feed(data)
        waiting = self._waiting
        while True:
            try:
                reply = reader.gets()
            except InvalidResponse as exc:
                self._fail(_lost(exc))
                return
            if reply is _NOT_YET:
                return
            if not waiting:
                self._fail(RedisConnectionError("Redis sent a reply nobody asked for."))
                return
            future, _ = waiting.popleft()
            if future.done():
                continue  # its caller gave up: the reply is nobody's
            if isinstance(reply, Exception):
                future.set_exception(reply)  # an error reply, as redis-py raises it
            elif type(reply) is list and reply and isinstance(reply[0], RedisConnectionError):
                future.set_exception(reply[0])
            else:
                future.set_result(reply)

    def eof_received(self) -> bool:
        self._fail(RedisConnectionError("Connection closed by server."))
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        if self._transport is not None:
            self._fail(_lost(exc) if exc else RedisConnectionError("Connection closed."))


def _lost(exc: BaseException | None) -> RedisConnectionError:
    error = RedisConnectionError(f"Redis connection lost: {exc}")
    error.__cause__ = exc
    return error


def _copy(error: Exception) -> Exception:
    """A fresh exception per failed caller (each gets its own traceback)."""
    copy = type(error)(*error.args) if isinstance(error, RedisConnectionError) else _lost(error)
    copy.__cause__ = error.__cause__
    return copy
