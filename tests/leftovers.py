"""Processes a test run started and left behind: the run's children (however deep), and whatever
escaped them (a daemon, an orphaned worker) but still carries the run's mark in its environment
or the run's GATEWAY_VAR_DIR."""

from __future__ import annotations

import os
import uuid

import psutil

from gateway_project.env import var_dir

GRACE_SECONDS = 5.0
# A run of the suite's own tests, whose leftovers never exit by themselves, is given less.
GRACE_ENV = "GATEWAY_TEST_LEFTOVER_GRACE"
RUN_MARK = "GATEWAY_TEST_RUN"


def _grace() -> float:
    return float(os.environ.get(GRACE_ENV, GRACE_SECONDS))


def run_mark() -> None:
    """Mark this run: the processes it starts inherit the mark (unless given a bare environment)."""
    os.environ[RUN_MARK] = uuid.uuid4().hex


def _own_lineage() -> set[int]:
    me = psutil.Process()
    return {me.pid, *(parent.pid for parent in me.parents())}


def _carries(proc: psutil.Process, mark: str | None, folder: str | None) -> bool:
    try:
        env = proc.environ()
        if (mark and env.get(RUN_MARK) == mark) or (
            folder and env.get("GATEWAY_VAR_DIR") == folder
        ):
            return True
    except (psutil.AccessDenied, psutil.NoSuchProcess, psutil.ZombieProcess, OSError):
        pass
    try:
        return bool(folder) and any(str(folder) in arg for arg in proc.cmdline())
    except (psutil.AccessDenied, psutil.NoSuchProcess, psutil.ZombieProcess, OSError):
        return False


def _alive(proc: psutil.Process) -> bool:
    try:
        return proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def leftovers() -> list[psutil.Process]:
    """Live processes this run started that are still there."""
    mine = _own_lineage()
    found = {proc.pid: proc for proc in psutil.Process().children(recursive=True)}
    mark = os.environ.get(RUN_MARK)
    # The var folder says "this run" only when the run has a folder of its own (the Makefile's).
    folder = os.environ.get("GATEWAY_VAR_DIR")
    if not folder or os.path.realpath(folder) != str(var_dir().resolve()):
        folder = None
    for proc in psutil.process_iter():
        if proc.pid not in mine and proc.pid not in found and _carries(proc, mark, folder):
            found[proc.pid] = proc
    return [proc for proc in found.values() if _alive(proc)]


def _describe(proc: psutil.Process) -> str:
    try:
        return f"pid {proc.pid}: {' '.join(proc.cmdline())[:200]}"
    except (psutil.Error, OSError):
        return f"pid {proc.pid}"


def leftovers_stop(*, ignore: set[int]) -> list[str]:
    """Give the run's processes (but those in `ignore`) a moment to finish exiting, then stop the
    rest; describe them."""
    left = [proc for proc in leftovers() if proc.pid not in ignore]
    _gone, alive = psutil.wait_procs(left, timeout=_grace() if left else 0)
    alive = [proc for proc in alive if _alive(proc)]
    described = [_describe(proc) for proc in alive]
    for proc in alive:
        try:
            proc.terminate()
        except psutil.NoSuchProcess:
            pass
    _gone, stubborn = psutil.wait_procs(alive, timeout=_grace())
    for proc in stubborn:
        try:
            proc.kill()
        except psutil.NoSuchProcess:
            pass
    return described
