"""The Prometheus endpoint served by the fast path."""

from __future__ import annotations

import re

import httpx

from tests.metrics_read import sample_sum
from tests.proxy.conftest import SLUG, compatible_target, tenant_build


def _sample(text: str, name: str, *labels: str) -> float:
    total = 0.0
    for line in text.splitlines():
        match = re.match(rf"{name}\{{(.*)\}} (\S+)$", line)
        if match and all(label in match.group(1) for label in labels):
            total += float(match.group(2))
    return total


def test_metrics_count_requests_tokens_and_latency(gateway, tenant):
    headers = {"Authorization": f"Bearer {tenant.key}"}
    body = {"model": SLUG, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 3}
    before = httpx.get(f"{gateway.url}/metrics").text

    httpx.post(f"{gateway.url}/v1/chat/completions", json=body, headers=headers)
    after = httpx.get(f"{gateway.url}/metrics").text

    ok = ('status="200"', f'slug="{SLUG}"')
    assert (
        _sample(after, "gateway_requests_total", *ok)
        == _sample(before, "gateway_requests_total", *ok) + 1
    )
    output = ('kind="output"', f'slug="{SLUG}"')
    assert (
        _sample(after, "gateway_tokens_total", *output)
        - _sample(before, "gateway_tokens_total", *output)
        == 3
    )
    assert _sample(after, "gateway_overhead_seconds_count") > _sample(
        before, "gateway_overhead_seconds_count"
    )
    # In seconds: one loopback request adds well under a second (in milliseconds it would add >= 1).
    duration = ("gateway_request_duration_seconds_sum", 'route="chat"')
    assert 0 < _sample(after, *duration) - _sample(before, *duration) < 1
    assert "gateway_upstream_duration_seconds_bucket" in after
    assert "gateway_streams_in_flight" in after
    assert "gateway_key_cache_age_seconds" in after
    assert "gateway_usage_queue_depth" in after


def test_health_and_admin_still_go_to_django(gateway):
    assert httpx.get(f"{gateway.url}/healthz").json() == {"status": "ok"}
    assert httpx.get(f"{gateway.url}/admin/login/").status_code == 200


def test_limit_rejections_and_upstream_errors_carry_the_resolved_slug(
    gateway, workspace, upstream, unavailable_upstream
):
    limits = {"rate_limits": [{"type": "REQUEST", "unit": "MINUTE", "threshold": 1}]}
    limited = tenant_build(
        workspace=workspace, targets=[compatible_target(upstream.url)], limits=limits
    )
    down = tenant_build(
        workspace=workspace,
        targets=[compatible_target(unavailable_upstream.url)],
        slug="acme/down",
        external_id="cust_down",
    )
    body = {"model": SLUG, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 3}

    def chat(tenant, **changes):
        headers = {"Authorization": f"Bearer {tenant.key}"}
        url = f"{gateway.url}/v1/chat/completions"
        return httpx.post(url, json={**body, **changes}, headers=headers).status_code

    before = httpx.get(f"{gateway.url}/metrics").text
    statuses = [chat(limited), chat(limited), chat(down, model="acme/down"), chat(down)]
    after = httpx.get(f"{gateway.url}/metrics").text

    def added(name: str, **labels: str) -> float:
        return sample_sum(after, name, **labels) - sample_sum(before, name, **labels)

    assert statuses == [200, 429, 503, 404]
    rejected = {"type": "request", "unit": "minute", "slug": SLUG}
    assert added("gateway_limit_rejections_total", **rejected) == 1
    assert added("gateway_upstream_errors_total", slug="acme/down") == 1
    # A slug the caller may not use is never a label value.
    assert added("gateway_upstream_errors_total", slug=SLUG) == 0
    assert added("gateway_requests_total", slug="unknown", status="404") == 1
