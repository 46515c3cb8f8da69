"""The request path's Redis commands multiplexed on one connection per process and Redis.

With a pooled connection per command, every request's two scripts cost a write and a read system
call each on both sides, and wake Redis once per command. Here a command goes out at once when
none is in flight; those issued while some are go out together at the end of the event-loop step.
Redis answers a connection's commands in the order it read them, so each reply goes to the
command at the head of the queue: the requests of a busy process share writes, reads and
wake-ups of Redis. Redis runs commands one at a time whatever connection they come on, so the
shared connection makes no command wait behind another that it would not have waited for anyway.

The connection is made by redis-py (its URL's address, TLS, AUTH, database and handshake), then
its socket is read by a protocol of our own with hiredis, without a task per reply. Taking the
socket over relies on redis-py's asyncio Connection keeping its streams in `_reader` and `_writer`
(redis-py is pinned; tests/routing/test_redis_wire.py runs the handshake for TCP and unix
sockets, with AUTH and a database). Safety:

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
import contextlib
import socket
from collections import deque
from collections.abc import Callable
from typing import Any

import hiredis
from redis._parsers import BaseParser
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import InvalidResponse

ConnectionFactory = Callable[[], Any]  # a redis-py asyncio Connection, not connected yet
_NOT_YET = object()  # hiredis: no complete reply buffered


class _Wire(asyncio.Protocol):
    """One connection's socket, read for its mux: what a replaced connection still reports
    (its loss, late bytes) never reaches the mux's next connection."""

    __slots__ = ("_mux", "transport", "reader", "streams")

    def __init__(self, mux: RedisMux, transport: asyncio.Transport, streams: tuple[Any, Any]):
        self._mux = mux
        self.transport = transport
        # Kept while the socket is ours: a StreamWriter closes its transport when collected.
        self.streams = streams
        self.reader = hiredis.Reader(
            protocolError=InvalidResponse, replyError=BaseParser.parse_error, notEnoughData=_NOT_YET
        )

    def data_received(self, data: bytes) -> None:
        self._mux._replies(self, data)

    def eof_received(self) -> bool:
        self._mux._wire_lost(self, RedisConnectionError("Connection closed by server."))
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self._mux._wire_lost(
            self, _lost(exc) if exc else RedisConnectionError("Connection closed.")
        )


class RedisMux:
    """One process's connection to one Redis for packed commands (`run`)."""

    def __init__(
        self, connection_factory: ConnectionFactory, *, stall: float, max_waiting: int
    ) -> None:
        self._factory = connection_factory
        self._stall = stall
        self._max_waiting = max_waiting
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wire: _Wire | None = None
        self._connecting: asyncio.Task[None] | None = None
        # One (future, when queued) per command written or to write, in order.
        self._waiting: deque[tuple[asyncio.Future[Any], float]] = deque()
        self._out: list[bytes] = []
        self._flush_due = False

    async def run(self, command: bytes) -> Any:
        """Send one packed command and return its reply (an error reply raises)."""
        loop = asyncio.get_running_loop()
        if loop is not self._loop:
            self._loop_change(loop)
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
        wire = self._wire
        if wire is not None and not waiting:
            # Nothing in flight: out at once (a lone request's command waits for no other).
            waiting.append((future, now))
            self._send(wire, command)
            return await future
        waiting.append((future, now))
        self._out.append(command)
        if wire is not None:
            if not self._flush_due:
                self._flush_due = True
                loop.call_soon(self._flush)
        elif self._connecting is None:
            self._connecting = loop.create_task(self._connect())
        return await future

    async def close(self) -> None:
        """Close the connection (commands still waiting fail); a later command opens another."""
        loop = asyncio.get_running_loop()
        if loop is not self._loop:
            self._loop_change(loop)  # drops another loop's connection (and its connecting)
            return
        connecting = self._connecting
        if connecting is not None:
            connecting.cancel()
            await asyncio.gather(connecting, return_exceptions=True)
        self._fail(RedisConnectionError("The Redis connection is closed."))

    # The connection's lifetime.

    def _loop_change(self, loop: asyncio.AbstractEventLoop) -> None:
        """A connection serves one event loop: another loop (tests run many) starts afresh."""
        if self._loop is not None:
            self._connecting = None  # a task of the other loop
            self._flush_due = False
            self._fail(RedisConnectionError("The Redis connection belonged to another loop."))
        self._loop = loop

    async def _connect(self) -> None:
        try:
            connection = self._factory()
            # Bounded like a command: a server that accepts but never answers the handshake
            # must not hold every later command behind a connect that never ends.
            async with asyncio.timeout(self._stall):
                await connection.connect()
            # Take the connected socket from redis-py: its streams go to the wire and the
            # connection object forgets them (so it never closes the socket behind us).
            reader, writer = connection._reader, connection._writer
            connection._reader = connection._writer = None
            wire = _Wire(self, writer.transport, (reader, writer))
            self._wire = wire
            wire.transport.set_protocol(wire)
            left = bytes(reader._buffer)
            if left:
                self._replies(wire, left)
        except asyncio.CancelledError:
            self._connecting = None
            raise
        except Exception as exc:  # noqa: BLE001 - any failure to connect fails its commands
            self._connecting = None
            self._fail(exc if isinstance(exc, RedisConnectionError) else _lost(exc))
            return
        self._connecting = None
        self._flush()

    def _flush(self) -> None:
        self._flush_due = False
        wire, out = self._wire, self._out
        if wire is None or not out:
            return
        data = out[0] if len(out) == 1 else b"".join(out)
        out.clear()
        self._send(wire, data)

    def _send(self, wire: _Wire, data: bytes) -> None:
        try:
            wire.transport.write(data)
        except RuntimeError as exc:
            # uvloop refuses a write to a socket it already closed: the connection is lost (its
            # commands fail now rather than wait for the stall bound).
            self._fail(_lost(exc))

    def _fail(self, error: Exception) -> None:
        """Drop the connection and fail every command waiting on it."""
        wire, self._wire = self._wire, None
        self._out.clear()
        waiting = list(self._waiting)
        self._waiting.clear()
        if wire is not None:
            try:
                wire.transport.abort()
            except RuntimeError:
                # Its loop is closed (tests run many loops): the transport can no longer close
                # itself; the socket is shut down here and closed when the transport is collected.
                with contextlib.suppress(OSError):
                    wire.transport.get_extra_info("socket").shutdown(socket.SHUT_RDWR)
        for future, _ in waiting:
            if not future.done():
                future.set_exception(_copy(error))

    def _wire_lost(self, wire: _Wire, error: Exception) -> None:
        if wire is self._wire:
            self._fail(error)

    def _replies(self, wire: _Wire, data: bytes) -> None:
        """Hand each complete reply to the command at the head of the queue."""
        if wire is not self._wire:
            return  # a connection already dropped
        reader = wire.reader
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


def _lost(exc: BaseException | None) -> RedisConnectionError:
    error = RedisConnectionError(f"Redis connection lost: {exc}")
    error.__cause__ = exc
    return error


def _copy(error: Exception) -> Exception:
    """A fresh exception per failed caller (each gets its own traceback)."""
    copy = type(error)(*error.args) if isinstance(error, RedisConnectionError) else _lost(error)
    copy.__cause__ = error.__cause__
    return copy
