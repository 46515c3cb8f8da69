"""A billing webhook receiver that verifies Standard Webhooks signatures and records what it got.

It stands in for a lab's billing backend in the demo and the tests. Verification uses the public
`standardwebhooks` library, as a real receiver would. Failures can be injected:
`fail_next(n, status)` answers the next n deliveries with `status` (e.g. 500 or 410).

    python -m tests.fakes.webhook_receiver --port 8200 --secret whsec_...
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import threading
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from standardwebhooks.webhooks import Webhook, WebhookVerificationError


@dataclass
class Delivery:
    """One received POST: headers, raw body, and whether its signature verified."""

    webhook_id: str
    timestamp: str
    signature: str
    body: bytes
    verified: bool
    status: int

    def events(self) -> list[dict[str, Any]]:
        """The usage events of the batch."""
        return list(json.loads(self.body)["data"]["events"])


@dataclass
class WebhookReceiver:
    """State of one receiver: its secret, what it received, injected failures."""

    secret: str | None = None
    deliveries: list[Delivery] = field(default_factory=list)
    _fail: list[int] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def fail_next(self, count: int, status: int = 500) -> None:
        """Answer the next `count` deliveries with `status`."""
        with self._lock:
            self._fail.extend([status] * count)

    def events(self) -> dict[str, dict[str, Any]]:
        """Verified, accepted events by idempotencyKey (duplicates collapse)."""
        with self._lock:
            accepted = [d for d in self.deliveries if d.verified and d.status == 200]
        return {e["idempotencyKey"]: e for d in accepted for e in d.events()}

    def _verify(self, body: bytes, headers: dict[str, str]) -> bool:
        if not self.secret:
            return True
        try:
            Webhook(self.secret).verify(body, headers)
        except WebhookVerificationError:
            return False
        return True

    async def handle(self, request: web.Request) -> web.Response:
        """Verify and record one delivery."""
        body = await request.read()
        headers = {k.lower(): v for k, v in request.headers.items()}
        verified = self._verify(body, headers)
        with self._lock:
            status = self._fail.pop(0) if self._fail else (200 if verified else 401)
            self.deliveries.append(
                Delivery(
                    webhook_id=headers.get("webhook-id", ""),
                    timestamp=headers.get("webhook-timestamp", ""),
                    signature=headers.get("webhook-signature", ""),
                    body=body,
                    verified=verified,
                    status=status,
                )
            )
        if status == 200:
            count = len(json.loads(body).get("data", {}).get("events", []))
            print(f"webhook {headers.get('webhook-id')}: {count} events, verified", flush=True)
        return web.json_response({"ok": status == 200}, status=status)

    def app(self) -> web.Application:
        """The aiohttp application (POST /webhooks, GET /healthz)."""
        app = web.Application()
        app.router.add_post("/webhooks", self.handle)
        app.router.add_get("/healthz", _healthz)
        return app


async def _healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


class WebhookReceiverThread:
    """Runs a receiver on its own loop in a background thread (for sync tests)."""

    def __init__(
        self, *, secret: str | None = None, host: str = "127.0.0.1", port: int = 0
    ) -> None:
        self.receiver = WebhookReceiver(secret=secret)
        self._host, self._port = host, port
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._runner: web.AppRunner | None = None
        self.port = 0

    @property
    def url(self) -> str:
        """Where to deliver."""
        return f"http://{self._host}:{self.port}/webhooks"

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._runner = web.AppRunner(self.receiver.app(), access_log=None)
        self._loop.run_until_complete(self._runner.setup())
        site = web.TCPSite(self._runner, self._host, self._port)
        self._loop.run_until_complete(site.start())
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self._ready.set()
        self._loop.run_forever()

    def __enter__(self) -> WebhookReceiverThread:
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("webhook receiver did not start")
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._runner is not None
        asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)


def main() -> None:
    """CLI entry point."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8200)
    parser.add_argument("--secret", default=None, help="whsec_... used to verify signatures")
    args = parser.parse_args()
    receiver = WebhookReceiver(secret=args.secret or None)
    print(f"webhook receiver listening on http://{args.host}:{args.port}/webhooks", flush=True)
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    web.run_app(receiver.app(), host=args.host, port=args.port, print=None, access_log=None)


if __name__ == "__main__":
    main()
