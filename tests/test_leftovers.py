"""A test run leaves nothing running, pass or fail: proven on a small run in a child pytest."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from gateway_project.env import BASE_DIR
from tests.leftovers import GRACE_ENV

pytestmark = pytest.mark.slow  # each test runs a pytest of its own

RUN = """
import subprocess
import sys

import redis
from django.conf import settings


def test_uses_the_embedded_redis():
    assert settings.REDIS_EMBEDDED
    assert redis.Redis.from_url(settings.REDIS_URL).ping()


def test_leaves_a_child_and_an_orphan_behind_and_fails():
    subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    subprocess.run(["/bin/sh", "-c", "sleep 600 &"], check=True)
    assert False
"""


@pytest.fixture
def var() -> Iterator[Path]:
    """A short folder (the redis unix socket path has a length limit) of the child run's own."""
    folder = Path(tempfile.mkdtemp(prefix="gw-left-"))
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


def _carrying(folder: Path) -> list[psutil.Process]:
    found = []
    for proc in psutil.process_iter():
        try:
            if proc.environ().get("GATEWAY_VAR_DIR") == str(folder) and proc.is_running():
                found.append(proc)
        except (psutil.Error, OSError):
            continue
    return [p for p in found if p.status() != psutil.STATUS_ZOMBIE]


@pytest.mark.parametrize("outcome", ["passing", "failing"])
def test_a_run_stops_the_embedded_redis_and_every_process_it_started(
    var: Path, outcome: str
) -> None:
    (var / "test_run.py").write_text(textwrap.dedent(RUN))
    env = {k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "DATABASE_URL")}
    selection = ["-k", "embedded"] if outcome == "passing" else []

    done = subprocess.run(
        [
            *(sys.executable, "-m", "pytest", "-p", "tests.conftest", "-p", "no:randomly"),
            *("--rootdir", str(BASE_DIR), "-c", str(BASE_DIR / "pyproject.toml")),
            *(str(var / "test_run.py"), *selection),
        ],
        cwd=BASE_DIR,
        env={**env, "GATEWAY_VAR_DIR": str(var), GRACE_ENV: "0.5"},  # its sleeps never exit
        capture_output=True,
        text=True,
        timeout=120,
    )

    output = done.stdout + done.stderr
    assert (var / "redis").is_dir(), output  # the embedded server did run
    assert _carrying(var) == []
    assert not (var / "redis.pid").exists()
    if outcome == "passing":
        assert done.returncode == 0, output
        assert "LEFT RUNNING" not in output
    else:
        assert done.returncode == 1, output
        left = [line for line in output.splitlines() if "LEFT RUNNING" in line]
        assert len(left) == 2 and all("sleep" in line for line in left), output
