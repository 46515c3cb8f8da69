"""`make run`: the whole gateway on one machine with embedded defaults, plus the demo workspace.

Starts the embedded Redis (when REDIS_URL is unset), migrates, creates the demo once, then
supervises gunicorn (uvicorn workers), a Celery worker, Celery beat, the fake model server and the
webhook receiver. Ctrl-C (or any child dying) stops every child.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import TYPE_CHECKING

from gateway_project import embedded_redis
from gateway_project.env import BASE_DIR, env_int, var_dir

if TYPE_CHECKING:
    from gateway_project.demo import DemoCredentials

PY = sys.executable
GATEWAY = [PY, "-m", "gateway_project.cli"]


def _configure_env() -> dict[str, int]:
    ports = {
        "gateway": env_int("PORT", 8000),
        "model": env_int("FAKE_MODEL_PORT", 8100),
        "receiver": env_int("WEBHOOK_RECEIVER_PORT", 8200),
    }
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "gateway_project.settings")
    # The demo's upstream and webhook receiver live on loopback, which the SSRF guard refuses
    # unless allow-listed; production leaves this empty.
    os.environ.setdefault("GATEWAY_UPSTREAM_ALLOWLIST", "127.0.0.0/8,::1,localhost")
    return ports


def _wait_http(url: str, *, timeout: float, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"process for {url} exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=1) as response:  # noqa: S310 - loopback
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"{url} did not become ready within {timeout:.0f}s")


def _spawn(name: str, args: list[str], logs: Path) -> subprocess.Popen[bytes]:
    log = open(logs / f"{name}.log", "ab")  # noqa: SIM115 - closed with the process
    return subprocess.Popen(
        args, cwd=BASE_DIR, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
    )


def _manage(*args: str) -> None:
    subprocess.run([*GATEWAY, "manage", *args], cwd=BASE_DIR, check=True)


def _start_children(
    ports: dict[str, int], webhook_secret: str, logs: Path
) -> dict[str, subprocess.Popen[bytes]]:
    host = "127.0.0.1"
    children = {
        "model-server": _spawn(
            "model-server",
            [PY, "-m", "tests.fakes.model_server", "--host", host, "--port", str(ports["model"])],
            logs,
        ),
        "webhook-receiver": _spawn(
            "webhook-receiver",
            [
                PY,
                "-m",
                "tests.fakes.webhook_receiver",
                "--host",
                host,
                "--port",
                str(ports["receiver"]),
                "--secret",
                webhook_secret,
            ],
            logs,
        ),
        # The same `gateway` subcommands a deployment runs (gateway_project/cli.py).
        "gateway": _spawn(
            "gateway",
            [*GATEWAY, "serve", "--workers", str(env_int("WEB_CONCURRENCY", 2))]
            + ["--bind", f"{host}:{ports['gateway']}"],
            logs,
        ),
        "celery-worker": _spawn(
            "celery-worker", [*GATEWAY, "worker", "--concurrency", "2", "--name", "local@%h"], logs
        ),
        "celery-beat": _spawn("celery-beat", [*GATEWAY, "beat"], logs),
    }
    return children


def _stop(children: dict[str, subprocess.Popen[bytes]]) -> None:
    for proc in children.values():
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
    deadline = time.monotonic() + 10
    for proc in children.values():
        try:
            proc.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)


def _banner(ports: dict[str, int], creds: DemoCredentials, logs: Path) -> str:
    base = f"http://127.0.0.1:{ports['gateway']}"
    c = creds
    return f"""
Gateway is up.
  Admin:           {base}/admin/   login: {c.admin_username} / {c.admin_password}
  Management API:  {base}/v1/gateway/   (reference: {base}/v1/gateway/docs)
  Inference URL:   {base}/v1
  Health:          {base}/healthz  {base}/readyz  {base}/metrics
  Management key:  {c.management_key}
  Federated key:   {c.federated_key}   (group {c.group_id}, model demo/echo)
  Webhook secret:  {c.webhook_secret}  (receiver on http://127.0.0.1:{ports["receiver"]})
  Logs:            {logs}/

Try it:
  curl -s {base}/v1/chat/completions \\
    -H "Authorization: Bearer {c.federated_key}" -H "Content-Type: application/json" \\
    -d '{{"model": "demo/echo", "messages": [{{"role": "user", "content": "Hello"}}]}}'

  curl -s {base}/v1/gateway/groups -H "Authorization: Bearer {c.management_key}"

  .venv/bin/python - <<'EOF'
from openai import OpenAI
client = OpenAI(base_url="{base}/v1", api_key="{c.federated_key}")
for chunk in client.chat.completions.create(
        model="demo/echo", messages=[{{"role": "user", "content": "Hi"}}], stream=True):
    print(chunk.choices[0].delta.content or "" if chunk.choices else "", end="", flush=True)
print()
EOF

Press Ctrl-C to stop everything.
"""


def main() -> int:
    """Run everything until Ctrl-C."""
    ports = _configure_env()
    logs = var_dir() / "logs"
    logs.mkdir(exist_ok=True)
    embedded = not os.environ.get("REDIS_URL")
    if embedded:
        embedded_redis.start()
    _manage("migrate", "--no-input", "-v", "0")
    _manage("collectstatic", "--no-input", "-v", "0")

    import django

    django.setup()
    from gateway_project.demo import demo_ensure

    creds = demo_ensure(
        model_base_url=f"http://127.0.0.1:{ports['model']}/v1",
        webhook_url=f"http://127.0.0.1:{ports['receiver']}/webhooks",
    )
    children = _start_children(ports, creds.webhook_secret, logs)
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    try:
        _wait_http(
            f"http://127.0.0.1:{ports['gateway']}/readyz", timeout=60, proc=children["gateway"]
        )
        print(_banner(ports, creds, logs), flush=True)
        while all(proc.poll() is None for proc in children.values()):
            time.sleep(0.5)
        dead = [name for name, proc in children.items() if proc.poll() is not None]
        print(f"stopping: {', '.join(dead)} exited (see {logs})", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("\nstopping...", flush=True)
        return 0
    finally:
        _stop(children)
        if embedded:
            embedded_redis.stop()


if __name__ == "__main__":
    sys.exit(main())
