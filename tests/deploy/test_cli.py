"""The `gateway` command line: what each subcommand runs, and what it refuses."""

from __future__ import annotations

import subprocess
import sys

import pytest

from gateway_project.cli import main, serve_argv
from tests.deploy.manifests import ROOT


def test_serve_runs_gunicorn_with_the_gateway_worker_and_a_longer_graceful_timeout(monkeypatch):
    monkeypatch.setenv("GATEWAY_SHUTDOWN_TIMEOUT", "12")

    argv = serve_argv(workers=3, bind="0.0.0.0:9000")

    assert argv[1:4] == ["-m", "gunicorn", "gateway_project.asgi:application"]
    assert argv[argv.index("-k") + 1] == "gateway_project.worker.GatewayWorker"
    assert argv[argv.index("--workers") + 1] == "3"
    assert argv[argv.index("--bind") + 1] == "0.0.0.0:9000"
    assert argv[argv.index("--graceful-timeout") + 1] == "17"


def test_unknown_subcommands_and_options_are_refused(capsys):
    for argv in (["launch"], ["serve", "--threads", "4"], ["check", "now"]):
        with pytest.raises(SystemExit) as exited:
            main(argv)

        assert exited.value.code == 2
    assert "unrecognized arguments: now" in capsys.readouterr().err


def _check(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gateway_project.cli", "check"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_check_says_what_is_wrong_and_exits_1(tmp_path):
    env = {
        "PATH": "/usr/bin:/bin",
        "DATABASE_URL": f"sqlite:///{tmp_path / 'empty.sqlite3'}",
        "REDIS_URL": "redis://127.0.0.1:1/0",
        "SECRET_KEY": "x" * 60 + "abcdef",
        "GATEWAY_VAR_DIR": str(tmp_path),
    }

    out = _check(env)

    assert out.returncode == 1
    assert "FAIL database: " in out.stdout and "not applied; run `gateway migrate`" in out.stdout
    assert "FAIL redis: cannot reach Redis at REDIS_URL" in out.stdout


def test_check_refuses_unsafe_production_settings_in_words(tmp_path):
    env = {"PATH": "/usr/bin:/bin", "GATEWAY_PRODUCTION": "1", "GATEWAY_VAR_DIR": str(tmp_path)}

    out = _check(env)

    assert out.returncode == 1
    assert out.stdout.startswith("FAIL settings: GATEWAY_PRODUCTION=1 refuses to start")
    assert "SECRET_KEY must be set" in out.stdout
