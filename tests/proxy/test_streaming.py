"""SSE relay: chunks as they arrive, disconnects, failures after the first byte, usage capture."""

from __future__ import annotations

import json
import time

import httpx
import pytest

from billing.models import UsageEvent
from billing.services.ingest import usage_ingest
from tests.proxy.conftest import SLUG
from tests.waiting import wait_until

CHAT = "/v1/chat/completions"


def _stream_request(gateway, key, **fake):
    body = {
        "model": SLUG,
        "messages": [{"role": "user", "content": "hi"}],
        "stream": True,
        "fake": fake,
    }
    headers = {"Authorization": f"Bearer {key}"}
    return httpx.stream("POST", f"{gateway.url}{CHAT}", json=body, headers=headers, timeout=30)


def _events(lines):
    for line in lines:
        if line.startswith("data: "):
            yield line[6:]


def test_first_chunk_arrives_while_the_upstream_is_still_generating(gateway, tenant, upstream):
    with _stream_request(gateway, tenant.key, tokens=5, delay_ms=300) as response:
        events = _events(response.iter_lines())
        first_content = next(e for e in events if '"tok0"' in e)
        record = upstream.requests[-1]
        state_at_first_chunk = (record.completed, record.chunks_sent)
        rest = list(events)

    assert json.loads(first_content)["model"] == SLUG
    assert state_at_first_chunk[0] is None and state_at_first_chunk[1] < 5
    assert rest[-1] == "[DONE]"
    assert record.completed is True


def test_time_to_first_byte_matches_direct_within_a_chunk_delay(gateway, tenant, upstream):
    def first_chunk_after(url, key):
        body = {
            "model": "fake-model" if key is None else SLUG,
            "stream": True,
            "messages": [{"role": "user", "content": "hi"}],
            "fake": {"tokens": 3, "delay_ms": 200},
        }
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        started = time.perf_counter()
        with httpx.stream("POST", url, json=body, headers=headers, timeout=30) as response:
            events = _events(response.iter_lines())
            next(e for e in events if "tok0" in e)
            first = time.perf_counter() - started
            list(events)
        return first, time.perf_counter() - started

    _, _ = first_chunk_after(f"{gateway.url}{CHAT}", tenant.key)  # warm the key cache
    direct_first, _ = first_chunk_after(f"{upstream.url}/chat/completions", None)
    gateway_first, gateway_total = first_chunk_after(f"{gateway.url}{CHAT}", tenant.key)

    # The upstream spaces chunks 200 ms apart: a buffering relay would deliver tok0 at the end.
    assert gateway_first < direct_first + 0.1
    assert gateway_first < gateway_total - 0.3


@pytest.mark.parametrize("server", ["gateway", "gateway_plain"])
def test_client_disconnect_stops_the_upstream_and_records_a_cancelled_event(
    server, request, tenant, upstream
):
    gateway = request.getfixturevalue(server)
    with _stream_request(gateway, tenant.key, tokens=50, delay_ms=50) as response:
        events = _events(response.iter_lines())
        seen = [next(e for e in events if "tok2" in e)]
        record = upstream.requests[-1]

    wait_until(lambda: record.completed is False, timeout=5)
    wait_until(lambda: usage_ingest() == 1, timeout=5)
    event = UsageEvent.objects.get()
    assert seen and event.status == "cancelled" and event.usage_estimated
    assert 3 <= event.output_tokens <= record.chunks_sent
    assert record.chunks_sent < 50


def test_upstream_failure_mid_stream_ends_with_an_sse_error(gateway, tenant, upstream):
    with _stream_request(gateway, tenant.key, tokens=10, drop_after=3) as response:
        events = list(_events(response.iter_lines()))

    assert response.status_code == 200
    assert json.loads(events[-1])["error"]["code"] == "bad_gateway"
    assert "[DONE]" not in events
    usage_ingest()
    event = UsageEvent.objects.get()
    assert (event.status, event.output_tokens, event.usage_estimated) == ("cancelled", 3, True)


def test_silence_longer_than_the_idle_timeout_ends_the_stream(gateway, tenant, settings):
    settings.GATEWAY_UPSTREAM_IDLE_TIMEOUT = 0.2

    with _stream_request(gateway, tenant.key, tokens=3, delay_ms=1000) as response:
        events = list(_events(response.iter_lines()))

    assert json.loads(events[-1])["error"]["code"] == "upstream_timeout"


def test_upstream_rejecting_stream_options_is_retried_without_and_usage_estimated(
    gateway, tenant, upstream
):
    with _stream_request(gateway, tenant.key, tokens=4, reject_stream_options=True) as response:
        events = list(_events(response.iter_lines()))

    assert response.status_code == 200 and events[-1] == "[DONE]"
    first, second = upstream.requests[-2:]
    assert "stream_options" in first.json and "stream_options" not in second.json
    usage_ingest()
    event = UsageEvent.objects.get()
    assert event.usage_estimated and event.output_tokens == 4


def test_stream_usage_comes_from_the_upstream_usage_chunk(gateway, tenant):
    with _stream_request(gateway, tenant.key, tokens=6) as response:
        events = list(_events(response.iter_lines()))

    assert all('"usage":{' not in e for e in events)
    usage_ingest()
    event = UsageEvent.objects.get()
    assert (event.output_tokens, event.usage_estimated, event.status) == (6, False, "completed")
    assert event.first_byte_ms is not None and event.upstream_ms > 0


def test_client_leaving_before_the_answer_cancels_the_upstream_without_an_event(
    gateway, tenant, upstream
):
    body = {
        "model": SLUG,
        "messages": [{"role": "user", "content": "hi"}],
        "fake": {"first_byte_delay_ms": 3000},
    }
    headers = {"Authorization": f"Bearer {tenant.key}"}

    try:
        httpx.post(f"{gateway.url}{CHAT}", json=body, headers=headers, timeout=0.3)
    except httpx.ReadTimeout:
        pass

    wait_until(lambda: upstream.requests and upstream.requests[-1].completed is False, timeout=2)
    assert usage_ingest() == 0


def test_stream_silent_before_its_first_byte_falls_back_to_the_next_target(
    gateway, workspace, backup_upstream, settings
):
    from tests.proxy.conftest import StaticUpstream, compatible_target, tenant_build

    settings.GATEWAY_UPSTREAM_FIRST_BYTE_TIMEOUT = 0.3
    silent = StaticUpstream(200, b"", content_type="text/event-stream", stall=2.0)
    targets = [compatible_target(silent.url), compatible_target(backup_upstream.url, "b")]
    tenant = tenant_build(workspace=workspace, targets=targets)

    with _stream_request(gateway, tenant.key, tokens=2) as response:
        events = list(_events(response.iter_lines()))
    silent.stop()

    assert response.status_code == 200 and events[-1] == "[DONE]"
    assert backup_upstream.requests[-1].json["model"] == "b"


def test_upstream_answering_a_stream_with_json_is_relayed_and_billed_from_its_usage(
    gateway, workspace
):
    from tests.proxy.conftest import StaticUpstream, compatible_target, tenant_build

    answer = {
        "object": "chat.completion",
        "model": "fake-model",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "hello"}}],
        "usage": {"prompt_tokens": 7, "completion_tokens": 2, "total_tokens": 9},
    }
    plain = StaticUpstream(200, json.dumps(answer).encode())
    tenant = tenant_build(workspace=workspace, targets=[compatible_target(plain.url)])

    with _stream_request(gateway, tenant.key) as response:
        response.read()
    plain.stop()

    assert response.status_code == 200 and response.json()["model"] == SLUG
    usage_ingest()
    event = UsageEvent.objects.get()
    assert (event.input_tokens, event.output_tokens, event.usage_estimated) == (7, 2, False)
