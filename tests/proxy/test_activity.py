"""The gateway records each 429 (which limit, why) and each key's use for support, off the
request path (routing/activity.py)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import httpx
import pytest

from routing.activity_read import group_rejections, group_rejections_recent, keys_last_used_pending
from tests.proxy.conftest import SLUG, GatewayThread, Tenant, compatible_target, tenant_build
from tests.waiting import wait_until

CHAT = "/v1/chat/completions"


@pytest.fixture
def limited(gateway: GatewayThread, workspace: Any, upstream: Any) -> Tenant:
    """A key whose group may send 2 requests a minute."""
    limits = {"rate_limits": [{"type": "REQUEST", "unit": "MINUTE", "threshold": 2}]}
    return tenant_build(
        workspace=workspace, targets=[compatible_target(upstream.url)], limits=limits
    )


def test_the_gateway_records_each_429_and_the_keys_use(
    gateway: GatewayThread, limited: Tenant
) -> None:
    headers = {"Authorization": f"Bearer {limited.key}"}
    body = {"model": SLUG, "messages": [{"role": "user", "content": "hi"}]}

    statuses = [
        httpx.post(f"{gateway.url}{CHAT}", json=body, headers=headers).status_code for _ in range(5)
    ]

    assert statuses == [200, 200, 429, 429, 429]
    now = datetime.now(UTC)
    rows = wait_until(
        lambda: [r for r in group_rejections(group_id=limited.group.pk, now=now) if r.count == 3],
        what="3 rejections recorded",
    )
    assert (rows[0].slug, rows[0].type, rows[0].unit, rows[0].threshold) == (
        SLUG,
        "REQUEST",
        "MINUTE",
        2,
    )
    assert rows[0].limit_group == limited.group.pk
    recent = group_rejections_recent(group_id=limited.group.pk)
    assert [r.key_prefix for r in recent] == [limited.prefix] * 3
    assert wait_until(lambda: keys_last_used_pending(prefixes=[limited.prefix]))
