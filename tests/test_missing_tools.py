"""A machine without Chromium or Node.js: provisioning says what it cannot install, and the suites
that need them fail with that one line instead of a traceback per test."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from gateway_project.env import BASE_DIR

pytestmark = pytest.mark.slow  # each test runs a pytest of its own


def _pytest(tmp_path: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:randomly", "-p", "no:cacheprovider", *args],
        cwd=BASE_DIR,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.mark.parametrize(
    ("suite", "env", "line"),
    [
        (
            "tests/browser",
            {"GATEWAY_CHROMIUM": "/nonexistent/chromium"},
            "Chromium is missing (/nonexistent/chromium)",
        ),
        ("tests/clients/test_node_sdk.py", {"PATH": "/nonexistent"}, "Node.js and npm are missing"),
    ],
)
def test_a_suite_without_its_program_fails_with_one_line(
    tmp_path: Path, suite: str, env: dict[str, str], line: str
) -> None:
    done = _pytest(tmp_path, suite, "-q", **env)

    assert done.returncode == 1, done.stdout + done.stderr
    assert "1 failed" in done.stdout and " passed" not in done.stdout
    assert sum(line in row for row in done.stdout.splitlines() if row.startswith("FAILED")) == 1
    assert "install" in done.stdout and "Traceback" not in done.stdout
    assert "ERROR" not in done.stdout


def test_provisioning_says_what_it_cannot_install_and_lets_the_run_go_on(tmp_path: Path) -> None:
    done = subprocess.run(
        ["/bin/bash", str(BASE_DIR / "tests" / "provision.sh")],
        env={"PATH": str(tmp_path), "GATEWAY_CHROMIUM": "/nonexistent/chromium"},
        capture_output=True,
        text=True,
        timeout=60,
    )

    lines = done.stdout.splitlines()
    assert done.returncode == 0, done.stderr
    assert len(lines) == 3, lines
    assert "Chromium is missing (/nonexistent/chromium)" in lines[0] and "chromium" in lines[0]
    assert "Node.js/npm are missing" in lines[1] and "install Node.js" in lines[1]
    assert "podman/mmdebstrap are missing" in lines[2] and "mmdebstrap packages" in lines[2]
