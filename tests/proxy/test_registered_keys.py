"""Registered keys (`prefix.secret`) on the inference path: only the prefix is stored or shown."""

from __future__ import annotations

import io
import json
import logging
import secrets
import string

import httpx

from billing.models import UsageEvent
from billing.services.ingest import usage_ingest
from billing.wire import event_wire
from gateway_project.kernel.logs import JsonFormatter
from groups.models import AuditEvent
from groups.services.audit import SYSTEM_ACTOR
from keys.models import ApiKey
from keys.services import api_key_register
from tests.proxy.conftest import SLUG, GatewayThread, Tenant

CHAT = {"model": SLUG, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}


def _secret() -> str:
    return "".join(secrets.choice(string.ascii_letters + string.digits) for _ in range(40))


def _chat(gateway: GatewayThread, key: str) -> httpx.Response:
    return httpx.post(
        f"{gateway.url}/v1/chat/completions", json=CHAT, headers={"Authorization": f"Bearer {key}"}
    )


def test_a_registered_key_calls_models_and_only_its_prefix_is_recorded(
    gateway: GatewayThread, tenant: Tenant
) -> None:
    secret = _secret()
    plaintext = f"lab-live.{secret}"
    api_key_register(
        workspace=tenant.workspace, group=tenant.group, actor=SYSTEM_ACTOR, key=plaintext
    )
    log = io.StringIO()
    handler = logging.StreamHandler(log)
    handler.setFormatter(JsonFormatter())
    logging.getLogger().addHandler(handler)

    try:
        answered = _chat(gateway, plaintext)
    finally:
        logging.getLogger().removeHandler(handler)

    assert answered.status_code == 200, answered.text
    assert usage_ingest() == 1
    event = event_wire(UsageEvent.objects.get())
    assert event["apiKeyPrefix"] == "lab-live"
    seen = json.dumps(
        [
            event,
            list(ApiKey.objects.values()),
            list(AuditEvent.objects.values("before", "after")),
            log.getvalue(),
        ],
        default=str,
    )
    assert "lab-live" in seen
    assert [secret[i : i + 6] for i in range(len(secret) - 5) if secret[i : i + 6] in seen] == []


def test_the_prefix_with_another_secret_is_refused(gateway: GatewayThread, tenant: Tenant) -> None:
    api_key_register(
        workspace=tenant.workspace, group=tenant.group, actor=SYSTEM_ACTOR, key=f"labx.{_secret()}"
    )

    forged = _chat(gateway, f"labx.{_secret()}")

    assert forged.status_code == 401
    assert forged.json()["error"]["code"] == "invalid_api_key"
