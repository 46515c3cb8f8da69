"""Connections spread evenly over the workers of a node.

Every worker accepts on the one listening socket the master bound. Left to uvloop, the worker that
wakes first accepts every connection waiting (libuv accepts until the queue is empty) and
keep-alive pins them there: 8 clients of a benchmark kept one worker of two busy and the other idle.
SO_REUSEPORT (a socket per worker) spreads connections by a hash of their addresses, so 8 clients
still land 6/2 or worse on two workers about one time in three, and a worker exiting resets the
connections still queued on its socket.

Here each worker accepts one connection at a time, and only while it holds no more open connections
than the least loaded worker of the node plus SLACK. Past that it leaves the listener to the others
until one of its own connections closes, or for PAUSE seconds, after which it takes a waiting
connection itself (a sibling can be busy or stuck). The open connection counts are rows of a small
table in shared memory that the master maps before it forks (`Ledger`); a row is IDLE until its
worker accepts and again once it stops.
"""

from __future__ import annotations

import asyncio
import logging
import mmap
import socket
from collections.abc import Callable, Iterable

ROWS = 64
IDLE = -1
# Connections a worker may hold above the least loaded one before it lets the others accept.
SLACK = 0
# How long a worker holding more than its share leaves waiting connections to the others.
PAUSE = 0.005
# Out of descriptors or memory: how long accepting rests (asyncio's own retry delay).
ACCEPT_RETRY_DELAY = 1.0

logger = logging.getLogger(__name__)


class Ledger:
    """The open connection count of each worker of a node, in memory shared across fork."""

    def __init__(self, rows: int = ROWS) -> None:
        self._map = mmap.mmap(-1, rows * 8)
        self.counts = memoryview(self._map).cast("q")
        for row in range(rows):
            self.counts[row] = IDLE

    def claim(self, taken: Iterable[int | None]) -> int | None:
        """A row no live worker holds (master, before a fork); None when all are held."""
        held = set(taken)
        return next((row for row in range(len(self.counts)) if row not in held), None)

    def release(self, row: int | None) -> None:
        """A worker exited (master): its row counts nothing any more."""
        if row is not None:
            self.counts[row] = IDLE


class Share:
    """One worker's row of the ledger: its own count, and whether it holds more than its share."""

    def __init__(self, ledger: Ledger, row: int) -> None:
        self._counts, self._row = ledger.counts, row
        self.open = 0

    def start(self) -> None:
        """This worker accepts from now on."""
        self._counts[self._row] = self.open

    def stop(self) -> None:
        """This worker accepts no more: the others stop comparing themselves with it."""
        self._counts[self._row] = IDLE

    def opened(self) -> None:
        """A connection was accepted."""
        self.open += 1
        self._counts[self._row] = self.open

    def closed(self) -> None:
        """A connection this worker accepted is gone."""
        self.open -= 1
        self._counts[self._row] = self.open

    def over(self) -> bool:
        """Whether this worker holds more than SLACK connections above the least loaded one."""
        least = min((count for count in self._counts.tolist() if count >= 0), default=0)
        return self.open > least + SLACK


_acceptors: list[Acceptor] = []


def connection_closed() -> None:
    """A connection of this process closed (its protocol calls this): one fewer held, and a
    listener left to the others may be read again at once."""
    if _acceptors:
        _acceptors[0].share.closed()
        for acceptor in _acceptors:
            acceptor.wake()


ProtocolFactory = Callable[[], asyncio.Protocol]


class Acceptor:
    """Accepts from one listening socket by the rule of the module docstring."""

    def __init__(
        self,
        listener: socket.socket,
        factory: ProtocolFactory,
        share: Share,
        *,
        ssl: object = None,
    ) -> None:
        self._listener, self._factory, self.share, self._ssl = listener, factory, share, ssl
        self._loop = asyncio.get_running_loop()
        self._fd = listener.fileno()
        self._reading = False
        self._due_until = 0.0  # after a pause, until then, a waiting connection is ours
        self._timer: asyncio.TimerHandle | None = None
        self._yielding = False  # paused for the others (not for want of descriptors)
        self._tasks: set[asyncio.Task[object]] = set()

    def start(self) -> None:
        """Begin accepting."""
        self._listener.setblocking(False)
        _acceptors.append(self)
        self.share.start()
        self._read()

    def stop(self) -> None:
        """Accept no more (before the listener closes)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._reading:
            self._loop.remove_reader(self._fd)
            self._reading = False
        self.share.stop()
        _acceptors.remove(self)

    def wake(self) -> None:
        """Read the listener again now if it was left to the others and this worker no longer
        holds more than its share."""
        if self._yielding and self._timer is not None and not self.share.over():
            self._timer.cancel()
            self._timer = None
            self._yielding = False
            self._read()

    def _read(self) -> None:
        self._loop.add_reader(self._fd, self._ready)
        self._reading = True

    def _resume(self) -> None:
        self._timer = None
        self._yielding = False
        self._due_until = self._loop.time() + PAUSE
        self._read()

    def _pause(self, delay: float) -> None:
        self._loop.remove_reader(self._fd)
        self._reading = False
        self._timer = self._loop.call_later(delay, self._resume)

    def _ready(self) -> None:
        if self._loop.time() > self._due_until and self.share.over():
            self._yielding = True
            self._pause(PAUSE)
            return
        try:
            conn, _ = self._listener.accept()
        except (BlockingIOError, InterruptedError, ConnectionAbortedError):
            return
        except OSError as exc:
            # Out of descriptors or memory, typically: retrying at once would spin.
            logger.error("accepting connections paused: %s", exc)
            self._pause(ACCEPT_RETRY_DELAY)
            return
        self._due_until = 0.0
        conn.setblocking(False)
        self.share.opened()
        task = self._loop.create_task(self._connect(conn))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _connect(self, conn: socket.socket) -> None:
        try:
            await self._loop.connect_accepted_socket(self._factory, conn, ssl=self._ssl)  # type: ignore[arg-type]
        except Exception:
            self.share.closed()
            conn.close()
            logger.exception("an accepted connection could not be set up")
