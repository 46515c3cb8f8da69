"""A TCP relay between the gateway and Redis that can break the network in the ways networks break.

    with RedisRelay("redis://127.0.0.1:6379/6") as relay:  # or unix:///path/redis.sock?db=0
        relay.url                 # redis://127.0.0.1:<port>/6: point REDIS_URL here
        relay.cut_on(b"PUBLISH")  # reset any connection the moment it sends a PUBLISH
        relay.blackhole()         # open connections stay open but nothing gets through any more
        relay.blackhole(matching=b"SUBSCRIBE")  # ... only those that ever sent this
        relay.blackhole(new_connections=True)  # ... and new connections are accepted, then ignored
        relay.refuse()            # reset every connection and every new one
        relay.restore()           # forward again (already black-holed connections stay dead)
        relay.blackhole_on(b"XADD")  # a connection goes silent the moment it sends this
        relay.hold_replies()      # Redis's replies wait in the relay (commands still reach Redis)
        relay.release_replies()   # ... and go on to their clients, in order

Black-holed bytes are read and dropped, as a network that lost its route drops them: the sender sees
neither an error nor an answer (a half-open connection).
"""

from __future__ import annotations

import contextlib
import socket
import struct
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from redis.connection import parse_url

CHUNK = 65536


@dataclass(eq=False)
class _Connection:
    client: socket.socket
    server: socket.socket | None
    blackholed: bool = False
    sent_at: list[tuple[float, bytes]] = field(default_factory=list)  # client -> Redis, recent


def _reset(sock: socket.socket | None) -> None:
    if sock is None:
        return
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    with contextlib.suppress(OSError):
        sock.close()


class RedisRelay:
    """Loopback listener forwarding to host:port, with faults switched on and off at run time."""

    def __init__(self, redis_url: str) -> None:
        options = parse_url(redis_url)
        self.target_path: str | None = options.get("path")
        self.target = (options.get("host", "127.0.0.1"), int(options.get("port", 6379)))
        self.db = int(options.get("db") or 0)
        self.lock = threading.Lock()
        self.connections: list[_Connection] = []
        self.mode = "forward"  # forward | blackhole | refuse
        self.cut_token: bytes | None = None
        self.blackhole_token: bytes | None = None
        self.cuts = 0
        self.replies_flow = threading.Event()
        self.replies_flow.set()
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.thread = threading.Thread(target=self._accept, daemon=True)

    def __enter__(self) -> RedisRelay:
        self.thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    @property
    def url(self) -> str:
        """redis:// URL of the relay, same database as the target."""
        return f"redis://127.0.0.1:{self.listener.getsockname()[1]}/{self.db}"

    def cut_on(self, token: bytes | None) -> None:
        """Reset (before forwarding it) any connection that sends a chunk containing `token`."""
        self.cut_token = token

    def blackhole_on(self, token: bytes | None) -> None:
        """Black-hole (from that chunk on, kept open) any connection that sends `token`."""
        self.blackhole_token = token

    def blackhole(self, *, matching: bytes | None = None, new_connections: bool = False) -> None:
        """Stop forwarding on open connections (those that sent `matching`, if given), keeping
        them open; with `new_connections`, accept new ones but forward nothing on them either."""
        with self.lock:
            for connection in self.connections:
                if matching is None or any(matching in data for _, data in connection.sent_at):
                    connection.blackholed = True
            if new_connections:
                self.mode = "blackhole"

    def hold_replies(self) -> None:
        """Keep every reply from Redis in the relay until release_replies (a slow answer)."""
        self.replies_flow.clear()

    def release_replies(self) -> None:
        """Pass the held replies on, each to the connection it belongs to, in order."""
        self.replies_flow.set()

    def refuse(self) -> None:
        """Reset every open connection and every new one."""
        with self.lock:
            self.mode = "refuse"
            connections, self.connections = self.connections, []
        for connection in connections:
            _reset(connection.client)
            _reset(connection.server)

    def restore(self) -> None:
        """Forward new connections again."""
        self.mode, self.cut_token, self.blackhole_token = "forward", None, None

    def sent_since(self, token: bytes, since: float) -> int:
        """How many connections sent a chunk containing `token` after `since` (time.monotonic)."""
        with self.lock:
            connections = list(self.connections)
        return sum(
            1 for c in connections if any(at >= since and token in data for at, data in c.sent_at)
        )

    def close(self) -> None:
        """Stop listening and drop every connection."""
        self.mode = "refuse"
        self.replies_flow.set()
        with contextlib.suppress(OSError):
            self.listener.close()
        with self.lock:
            connections, self.connections = self.connections, []
        for connection in connections:
            _reset(connection.client)
            _reset(connection.server)

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            if self.mode == "refuse":
                _reset(client)
                continue
            connection = _Connection(client, None)
            if self.mode == "blackhole":
                connection.blackholed = True
            else:
                try:
                    connection.server = self._connect()
                except OSError:
                    _reset(client)
                    continue
            with self.lock:
                self.connections.append(connection)
            threading.Thread(target=self._upstream, args=(connection,), daemon=True).start()
            if connection.server is not None:
                threading.Thread(target=self._downstream, args=(connection,), daemon=True).start()

    def _connect(self) -> socket.socket:
        if self.target_path is None:
            sock = socket.create_connection(self.target, timeout=5)
        else:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.connect(self.target_path)
        sock.settimeout(None)
        return sock

    def _upstream(self, connection: _Connection) -> None:
        while True:
            try:
                data = connection.client.recv(CHUNK)
            except OSError:
                data = b""
            if not data:
                self._drop(connection)
                return
            with self.lock:
                connection.sent_at.append((time.monotonic(), data[:256]))
                del connection.sent_at[:-200]
            silence = self.blackhole_token
            if silence is not None and silence in data:
                connection.blackholed = True
            if connection.blackholed:
                continue
            token = self.cut_token
            if token is not None and token in data:
                self.cuts += 1
                self._drop(connection)
                return
            try:
                assert connection.server is not None
                connection.server.sendall(data)
            except OSError:
                self._drop(connection)
                return

    def _downstream(self, connection: _Connection) -> None:
        assert connection.server is not None
        while True:
            try:
                data = connection.server.recv(CHUNK)
            except OSError:
                data = b""
            if not data:
                if not connection.blackholed:
                    self._drop(connection)
                return
            if connection.blackholed:
                continue
            self.replies_flow.wait()
            try:
                connection.client.sendall(data)
            except OSError:
                self._drop(connection)
                return

    def _drop(self, connection: _Connection) -> None:
        with self.lock:
            if connection in self.connections:
                self.connections.remove(connection)
        _reset(connection.client)
        _reset(connection.server)
