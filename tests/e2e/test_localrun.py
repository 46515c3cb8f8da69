"""`make run` end to end: the supervisor starts everything, the demo works, Ctrl-C stops it all."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from openai import OpenAI

from gateway_project.env import BASE_DIR
from tests.waiting import wait_until

pytestmark = pytest.mark.slow


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class LocalRun:
    """One `python -m gateway_project.localrun` process and what it printed."""

    def __init__(self, var_dir: Path, ports: dict[str, int]) -> None:
        env = {
            key: value
            for key, value in os.environ.items()
            if key not in {"DATABASE_URL", "REDIS_URL", "GATEWAY_UPSTREAM_ALLOWLIST"}
        }
        env.update(
            GATEWAY_VAR_DIR=str(var_dir),
            PORT=str(ports["gateway"]),
            FAKE_MODEL_PORT=str(ports["model"]),
            WEBHOOK_RECEIVER_PORT=str(ports["receiver"]),
            GATEWAY_WEBHOOK_FLUSH_SECONDS="0.5",
        )
        self.output = var_dir / "localrun.out"
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "gateway_project.localrun"],
            cwd=BASE_DIR,
            env=env,
            stdout=self.output.open("wb"),
            stderr=subprocess.STDOUT,
        )

    def text(self) -> str:
        return self.output.read_text()

    def wait_banner(self, timeout: float = 120) -> str:
        def banner() -> str | None:
            text = self.text()
            if "Press Ctrl-C" in text:
                return text
            assert self.proc.poll() is None, text
            return None

        return str(wait_until(banner, timeout=timeout, what="the banner"))

    def stop(self) -> int:
        self.proc.send_signal(signal.SIGINT)
        return self.proc.wait(timeout=30)


@pytest.fixture
def ports() -> dict[str, int]:
    return {"gateway": _free_port(), "model": _free_port(), "receiver": _free_port()}


@pytest.fixture
def var_dir(tmp_path: Path) -> Iterator[Path]:
    yield tmp_path
    pid_file = tmp_path / "redis.pid"
    if pid_file.exists():
        try:
            os.kill(int(pid_file.read_text()), signal.SIGKILL)
        except (ProcessLookupError, ValueError):
            pass


def _field(banner: str, pattern: str) -> str:
    match = re.search(pattern, banner)
    assert match, banner
    return match.group(1)


def test_make_run_serves_the_demo_and_stops_cleanly(var_dir: Path, ports: dict[str, int]) -> None:
    run = LocalRun(var_dir, ports)
    try:
        banner = run.wait_banner()
        base = f"http://127.0.0.1:{ports['gateway']}"
        key = _field(banner, r"Federated key:\s+(sky_\S+)")
        management_key = _field(banner, r"Management key:\s+(gwm_\S+)")
        password = _field(banner, r"login: admin / (\S+)")

        client = OpenAI(base_url=f"{base}/v1", api_key=key)
        reply = client.chat.completions.create(
            model="demo/echo", messages=[{"role": "user", "content": "Hello"}]
        )
        streamed = "".join(
            chunk.choices[0].delta.content or ""
            for chunk in client.chat.completions.create(
                model="demo/echo", messages=[{"role": "user", "content": "Hi"}], stream=True
            )
            if chunk.choices
        )
        groups = httpx.get(
            f"{base}/v1/gateway/groups", headers={"Authorization": f"Bearer {management_key}"}
        )
        admin = httpx.Client(base_url=base, follow_redirects=True)
        login_page = admin.get("/admin/login/")
        token = admin.cookies["csrftoken"]
        logged_in = admin.post(
            "/admin/login/?next=/admin/",
            data={"username": "admin", "password": password, "csrfmiddlewaretoken": token},
        )

        assert reply.model == "demo/echo"
        assert (reply.choices[0].message.content or "").startswith("tok0")
        assert streamed.startswith("tok0")
        assert groups.status_code == 200
        assert groups.json()["items"][0]["metadata"]["external_entity_id"] == "demo-customer"
        assert login_page.status_code == 200
        assert "Support console" in logged_in.text
        assert httpx.get(f"{base}/readyz").status_code == 200
        receiver_log = var_dir / "logs" / "webhook-receiver.log"
        wait_until(
            lambda: "events, verified" in receiver_log.read_text(),
            timeout=30,
            what="the receiver verified a delivery",
        )
    finally:
        code = run.stop()

    assert code == 0
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"http://127.0.0.1:{ports['gateway']}/healthz")


def test_a_second_make_run_reuses_the_demo(var_dir: Path, ports: dict[str, int]) -> None:
    first = LocalRun(var_dir, ports)
    try:
        key = _field(first.wait_banner(), r"Federated key:\s+(sky_\S+)")
    finally:
        first.stop()
    (var_dir / "localrun.out").unlink()

    second = LocalRun(var_dir, ports)
    try:
        banner = second.wait_banner()
        response = httpx.post(
            f"http://127.0.0.1:{ports['gateway']}/v1/chat/completions",
            headers={"Authorization": f"Bearer {key}"},
            json={"model": "demo/echo", "messages": [{"role": "user", "content": "again"}]},
        )
    finally:
        second.stop()

    assert _field(banner, r"Federated key:\s+(sky_\S+)") == key
    assert response.status_code == 200
