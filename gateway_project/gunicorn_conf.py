"""gunicorn's hooks for a gateway node: `gunicorn -c python:gateway_project.gunicorn_conf ...`.

Metrics are per node: every worker writes its numbers to memory-mapped files in the node's own
directory, PROMETHEUS_MULTIPROC_DIR (default: <var dir>/prometheus/<host>-<master pid>), and
/metrics sums them. prometheus_client picks its storage when it is first imported, and the workers
inherit the master's modules, so the directory is chosen here, when the master loads this file.
The master empties it when the node starts; when a worker exits, its live gauges leave the sum
while its counters stay in it, so a counter never goes down.

The workers share the node's connections evenly (gateway_project/balance.py) through a ledger the
master maps here, before it forks them.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path
from typing import Any

from gateway_project.balance import Ledger
from gateway_project.env import var_dir

NODE_DIRS = "prometheus"


def node_dir_default() -> Path:
    """This node's directory under the var dir, named for the host and the master's pid."""
    return var_dir() / NODE_DIRS / f"{socket.gethostname()}-{os.getpid()}"


os.environ.setdefault("PROMETHEUS_MULTIPROC_DIR", str(node_dir_default()))

from prometheus_client import multiprocess  # noqa: E402 - only once the directory is set

# The open connection count of each worker, mapped here so that every worker inherits it.
LEDGER = Ledger()


def on_starting(server: Any) -> None:
    """Node start (not a reload): an empty metrics directory; those of this host's dead nodes go."""
    directory = Path(os.environ["PROMETHEUS_MULTIPROC_DIR"])
    if directory.parent == var_dir() / NODE_DIRS:
        _dead_nodes_forget(directory.parent)
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    for path in directory.glob("*.db"):
        path.unlink()


def pre_fork(server: Any, worker: Any) -> None:
    """A worker about to start gets a row of the node's connection ledger (balance.py)."""
    worker.ledger = LEDGER
    worker.ledger_row = LEDGER.claim(w.ledger_row for w in server.WORKERS.values())


def child_exit(server: Any, worker: Any) -> None:
    """A worker exited or was killed: its live gauges leave the node's sum, its counters stay;
    its row of the connection ledger is free."""
    multiprocess.mark_process_dead(worker.pid)  # type: ignore[no-untyped-call]  # untyped library
    LEDGER.release(getattr(worker, "ledger_row", None))


def _dead_nodes_forget(parent: Path) -> None:
    host = socket.gethostname()
    for directory in parent.glob(f"{host}-*"):
        pid = directory.name.removeprefix(f"{host}-")
        if pid.isdigit() and not _alive(int(pid)):
            for path in directory.glob("*.db"):
                path.unlink(missing_ok=True)
            directory.rmdir()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
