"""Processes a test run started and left behind: the run's children (however deep), and whatever
escaped them (a daemon, an orphaned worker) but still carries the run's GATEWAY_VAR_DIR."""

from __future__ import annotations

import os

import psutil

from gateway_project.env import var_dir

GRACE_SECONDS = 5.0


def _own_lineage() -> set[int]:
    me = psutil.Process()
    return {me.pid, *(parent.pid for parent in me.parents())}


def _carries_var_dir(proc: psutil.Process, folder: str) -> bool:
    try:
        if proc.environ().get("GATEWAY_VAR_DIR") == folder:
            return True
    except (psutil.AccessDenied, psutil.NoSuchProcess, psutil.ZombieProcess, OSError):
        pass
    try:
        return any(folder in arg for arg in proc.cmdline())
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
    # Only a run with its own GATEWAY_VAR_DIR can recognise what escaped it (the Makefile sets it).
    folder = os.environ.get("GATEWAY_VAR_DIR")
    if folder and os.path.realpath(folder) == str(var_dir().resolve()):
        for proc in psutil.process_iter():
            if proc.pid not in mine and proc.pid not in found and _carries_var_dir(proc, folder):
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
    _gone, alive = psutil.wait_procs(left, timeout=GRACE_SECONDS if left else 0)
    alive = [proc for proc in alive if _alive(proc)]
    described = [_describe(proc) for proc in alive]
    for proc in alive:
        try:
            proc.terminate()
        except psutil.NoSuchProcess:
            pass
    _gone, stubborn = psutil.wait_procs(alive, timeout=GRACE_SECONDS)
    for proc in stubborn:
        try:
            proc.kill()
        except psutil.NoSuchProcess:
            pass
    return described
