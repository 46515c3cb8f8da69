"""The wheel with the runtime lock alone, in a fresh venv: it checks, migrates and serves."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from django.conf import settings

from tests.deploy.manifests import ROOT
from tests.faults.processes import free_port, group_kill, log_tail
from tests.waiting import wait_until

pytestmark = [pytest.mark.slow, pytest.mark.deploy]
DEV_ONLY = ("pytest", "mypy", "playwright", "hypothesis", "schemathesis", "ruff")


def _run(argv: list[str], **kwargs) -> subprocess.CompletedProcess[str]:
    out = subprocess.run(argv, capture_output=True, text=True, timeout=600, **kwargs)
    assert out.returncode == 0, f"{argv}\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}"
    return out


@pytest.fixture(scope="module")
def venv(tmp_path_factory) -> Path:
    """A venv holding the runtime lock and the project's wheel, nothing else."""
    root = tmp_path_factory.mktemp("wheel")
    # Built from a copy: setuptools leaves build/ and *.egg-info/ where it builds.
    source = root / "source"
    skip = shutil.ignore_patterns(".git", ".venv", "var", "build", "*.egg-info", "node_modules")
    shutil.copytree(ROOT, source, ignore=skip)
    _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-w", str(root), str(source)])
    (wheel,) = root.glob("inference_gateway-*.whl")
    _run([sys.executable, "-m", "venv", str(root / "venv")])
    pip = [str(root / "venv" / "bin" / "python"), "-m", "pip", "install", "--quiet"]
    _run([*pip, "--require-hashes", "-r", str(ROOT / "requirements.txt")])
    _run([*pip, "--no-deps", str(wheel)])
    return root / "venv"


def _env(tmp_path: Path, **extra: str) -> dict[str, str]:
    return {
        "PATH": os.environ["PATH"],
        "DATABASE_URL": f"sqlite:///{tmp_path / 'gateway.sqlite3'}",
        "REDIS_URL": settings.REDIS_URL,
        "SECRET_KEY": settings.SECRET_KEY,
        "GATEWAY_VAR_DIR": str(tmp_path / "var"),
        "ALLOWED_HOSTS": "localhost",
        **extra,
    }


def test_the_runtime_venv_has_no_test_or_dev_tools(venv):
    python = str(venv / "bin" / "python")

    found = [
        name
        for name in DEV_ONLY
        if subprocess.run([python, "-c", f"import {name}"], capture_output=True).returncode == 0
    ]

    assert found == []


def test_the_installed_gateway_checks_migrates_and_serves(venv, tmp_path):
    gateway, env = str(venv / "bin" / "gateway"), _env(tmp_path)
    before = subprocess.run(
        [gateway, "check"], cwd=tmp_path, env=env, capture_output=True, text=True
    )
    _run([gateway, "migrate"], cwd=tmp_path, env=env)
    _run([gateway, "manage", "collectstatic", "--no-input", "-v", "0"], cwd=tmp_path, env=env)
    after = _run([gateway, "check"], cwd=tmp_path, env=env)
    port = free_port()
    serve = [gateway, "serve", "--workers", "1", "--bind", f"127.0.0.1:{port}"]
    log = (tmp_path / "serve.log").open("wb")
    node = subprocess.Popen(
        serve, cwd=tmp_path, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
    )
    try:
        url, host = f"http://127.0.0.1:{port}", {"Host": "localhost"}
        wait_until(
            lambda: _status(f"{url}/readyz", host) == 200,
            timeout=60,
            what=log_tail(tmp_path / "serve.log"),
        )
        docs = httpx.get(f"{url}/v1/gateway/docs", headers=host)
        static = httpx.get(f"{url}/static/admin/css/base.css", headers=host)
        chart = httpx.get(f"{url}/static/billing/vendor/chart-4.6.1.umd.min.js", headers=host)
        probe = subprocess.run(
            [gateway, "probe", "/readyz"],
            cwd=tmp_path,
            capture_output=True,
            env={**env, "GATEWAY_BIND": f"127.0.0.1:{port}"},
        )
    finally:
        group_kill(node)

    assert before.returncode == 1 and "migration(s) not applied" in before.stdout
    assert "FAIL" not in after.stdout
    assert docs.status_code == 200 and "redoc" in docs.text.lower()
    assert static.status_code == 200 and chart.status_code == 200
    assert probe.returncode == 0


def _status(url: str, headers: dict[str, str]) -> int | None:
    try:
        return httpx.get(url, headers=headers, timeout=2).status_code
    except httpx.HTTPError:
        return None
