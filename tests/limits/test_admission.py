"""Admission outcomes: never-fitting requests, blocking thresholds, 429 details and headers."""

from __future__ import annotations

import httpx
import pytest

from groups.models import Workspace
from routing.admission import Admission, limits_admit, reset_format
from tests.fakes.model_server import FakeModelServerThread
from tests.limits.support import T0, counters_snapshot, rate, run, usage
from tests.proxy.conftest import (
    SLUG,
    GatewayThread,
    compatible_target,
    gateway,
    tenant_build,
    upstream,
)

__all__ = ["gateway", "upstream"]  # the proxy suite's live-server fixtures, used here


def admit(limits: list, *, tokens: int = 1, now: float = T0) -> Admission:
    """One admission of `acme/llama` at a given clock."""
    return run(limits_admit(limits=limits, reserve_tokens=tokens, slug="acme/llama", now=now))


def test_request_that_can_never_fit_is_rejected_without_retry_after() -> None:
    limits = [rate("TOKEN", "MINUTE", 1000)]

    admission = admit(limits, tokens=1001)

    assert not admission.allowed
    assert admission.retry_after is None
    assert "Retry-After" not in admission.headers
    assert admission.message is not None and "never" in admission.message
    assert counters_snapshot() == {}


def test_threshold_zero_blocks_every_request() -> None:
    limits = [rate("REQUEST", "MINUTE", 0)]

    admission = admit(limits)

    assert not admission.allowed
    assert admission.retry_after is None
    assert admission.error_type == "rate_limit_error"


def test_threshold_zero_token_limit_blocks_even_a_request_reserving_nothing() -> None:
    limits = [usage("TOKEN", 0)]

    admission = admit(limits, tokens=0)

    assert not admission.allowed
    assert admission.error_type == "usage_limit_error"


def test_rejection_message_names_the_limit_and_the_slug() -> None:
    limits = [rate("REQUEST", "MINUTE", 1)]
    admit(limits)

    admission = admit(limits)

    assert admission.message == (
        "Rate limit exceeded for model 'acme/llama': REQUEST limit of 1 per minute."
    )


@pytest.mark.parametrize(
    ("limits", "kind", "code", "message"),
    [
        (
            {"rate_limits": [{"type": "REQUEST", "unit": "MINUTE", "threshold": 1}]},
            "rate_limit_error",
            "rate_limit_exceeded",
            f"Rate limit exceeded for model '{SLUG}': REQUEST limit of 1 per minute.",
        ),
        (
            {"usage_limits": [{"type": "REQUEST", "unit": "DAY", "threshold": 1}]},
            "usage_limit_error",
            "usage_limit_exceeded",
            f"Usage limit exceeded for model '{SLUG}': REQUEST limit of 1 per day (UTC).",
        ),
    ],
)
def test_a_rejection_reaches_the_client_as_a_429_with_its_code_and_headers(
    gateway: GatewayThread,
    workspace: Workspace,
    upstream: FakeModelServerThread,
    limits: dict[str, list[dict[str, object]]],
    kind: str,
    code: str,
    message: str,
) -> None:
    tenant = tenant_build(
        workspace=workspace, targets=[compatible_target(upstream.url)], limits=limits
    )
    body = {"model": SLUG, "messages": [{"role": "user", "content": "hi"}]}
    headers = {"Authorization": f"Bearer {tenant.key}"}
    url = f"{gateway.url}/v1/chat/completions"
    admitted = httpx.post(url, json=body, headers=headers, timeout=10)

    rejected = httpx.post(url, json=body, headers=headers, timeout=10)

    assert admitted.status_code == 200
    assert rejected.status_code == 429
    assert rejected.json()["error"] == {
        "message": message,
        "type": kind,
        "code": code,
        "param": None,
    }
    assert int(rejected.headers["Retry-After"]) >= 1
    assert rejected.headers["x-ratelimit-limit-requests"] == "1"
    assert rejected.headers["x-ratelimit-remaining-requests"] == "0"
    assert "x-should-retry" not in rejected.headers
    assert len(upstream.requests) == 1


def test_the_longest_wait_decides_the_rejection() -> None:
    limits = [rate("REQUEST", "SECOND", 1), usage("REQUEST", 1)]
    admit(limits)

    admission = admit(limits, now=T0 + 0.5)

    assert admission.error_type == "usage_limit_error"
    assert admission.retry_after == pytest.approx(43200.5)


def test_success_headers_describe_the_tightest_request_and_token_limits() -> None:
    limits = [
        rate("REQUEST", "MINUTE", 10),
        rate("REQUEST", "MINUTE", 3, group="grp_root"),
        rate("TOKEN", "MINUTE", 6000),
    ]

    admission = admit(limits, tokens=100)

    assert admission.headers == {
        "x-ratelimit-limit-requests": "3",
        "x-ratelimit-remaining-requests": "2",
        "x-ratelimit-reset-requests": "20s",
        "x-ratelimit-limit-tokens": "6000",
        "x-ratelimit-remaining-tokens": "5900",
        "x-ratelimit-reset-tokens": "1s",
    }


def test_rejection_headers_carry_retry_after_rounded_up() -> None:
    limits = [rate("REQUEST", "MINUTE", 2), rate("TOKEN", "SECOND", 1000)]
    admit(limits)
    admit(limits)

    admission = admit(limits, now=T0 + 0.5)

    assert admission.retry_after == pytest.approx(29.5)
    assert admission.headers["Retry-After"] == "30"
    assert admission.headers["x-ratelimit-remaining-requests"] == "0"
    assert admission.headers["x-ratelimit-reset-requests"] == "59.5s"
    assert admission.headers["x-ratelimit-remaining-tokens"] == "1000"


def test_no_limits_admits_without_headers() -> None:
    admission = admit([])

    assert admission.allowed
    assert admission.headers == {}
    assert admission.reservation is None


@pytest.mark.parametrize(
    ("microseconds", "text"),
    [
        (0, "0s"),
        (20_000, "20ms"),
        (1_000_000, "1s"),
        (1_500_000, "1.5s"),
        (360_000_000, "6m0s"),
        (179_560_000, "2m59.56s"),
        (3_723_000_000, "1h2m3s"),
    ],
)
def test_reset_is_formatted_like_openai(microseconds: int, text: str) -> None:
    assert reset_format(microseconds) == text


def test_a_limit_list_edited_in_place_is_admitted_by_its_new_limits() -> None:
    limits = [rate("REQUEST", "MINUTE", 100)]
    assert admit(limits).allowed

    limits[0] = rate("REQUEST", "MINUTE", 0)

    assert not admit(limits).allowed
    limits.append(rate("TOKEN", "MINUTE", 1000))
    limits[0] = rate("REQUEST", "MINUTE", 100)
    admission = admit(limits, tokens=7)
    assert admission.allowed and admission.reservation is not None
    assert [c.cost for c in admission.reservation.counters] == [1, 7]
    assert admission.headers["x-ratelimit-limit-tokens"] == "1000"


def test_two_limits_of_a_type_report_the_one_with_least_room() -> None:
    limits = [rate("TOKEN", "MINUTE", 1000), usage("TOKEN", 500)]

    admission = admit(limits, tokens=100)

    assert admission.headers["x-ratelimit-limit-tokens"] == "500"
    assert admission.headers["x-ratelimit-remaining-tokens"] == "400"
