"""The shipped webhook receiver verifies Standard Webhooks signatures and records batches."""

from __future__ import annotations

import base64
import json
import os
from datetime import UTC, datetime

import httpx
from standardwebhooks.webhooks import Webhook

from tests.fakes.webhook_receiver import WebhookReceiverThread

SECRET = "whsec_" + base64.b64encode(os.urandom(32)).decode()


def _signed(body: bytes, msg_id: str = "msg_1") -> dict[str, str]:
    now = datetime.now(UTC)
    signature = Webhook(SECRET).sign(msg_id, now, body.decode())
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(int(now.timestamp())),
        "webhook-signature": signature,
        "content-type": "application/json",
    }


def _batch(*keys: str) -> bytes:
    events = [{"idempotencyKey": key, "tokens": {"inputTokens": 1}} for key in keys]
    return json.dumps({"type": "API_BILLING_USAGE", "data": {"events": events}}).encode()


def test_it_accepts_a_correctly_signed_batch() -> None:
    with WebhookReceiverThread(secret=SECRET) as receiver:
        body = _batch("a", "b")

        response = httpx.post(receiver.url, content=body, headers=_signed(body))

        assert response.status_code == 200
        assert set(receiver.receiver.events()) == {"a", "b"}


def test_it_rejects_a_tampered_body() -> None:
    with WebhookReceiverThread(secret=SECRET) as receiver:
        headers = _signed(_batch("a"))

        response = httpx.post(receiver.url, content=_batch("evil"), headers=headers)

        assert response.status_code == 401
        assert receiver.receiver.events() == {}
        assert receiver.receiver.deliveries[0].verified is False


def test_injected_failures_come_first_then_success() -> None:
    with WebhookReceiverThread(secret=SECRET) as receiver:
        receiver.receiver.fail_next(1, 500)
        body = _batch("a")

        first = httpx.post(receiver.url, content=body, headers=_signed(body))
        second = httpx.post(receiver.url, content=body, headers=_signed(body))

        assert (first.status_code, second.status_code) == (500, 200)
        assert list(receiver.receiver.events()) == ["a"]
