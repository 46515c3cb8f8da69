"""Redis unreachable: fail closed with 503 by default, fail open when configured, recover alone."""

from __future__ import annotations

import asyncio
import logging
import socket
import tempfile
import time
from pathlib import Path

import pytest
import redis.exceptions as rx
from pytest_django.fixtures import Settings

from routing.adjust_retry import pending_adjustments
from routing.admission import Admission, limits_admit, limits_settle
from routing.limit_counters import UNAVAILABLE, LimitsUnavailable, _evalsha
from routing.usage_read import group_usage_read
from tests.limits.support import (
    T0,
    port_is_free,
    rate,
    redis_server_start,
    redis_server_stop,
    run,
    usage,
)

DEAD_PORT = 7150
LIMITS = [rate("REQUEST", "MINUTE", 10), rate("TOKEN", "MINUTE", 1000)]


def admit() -> Admission:
    """One admission of `acme/llama` at a fixed clock."""
    return run(limits_admit(limits=LIMITS, reserve_tokens=1, slug="acme/llama", now=T0))


@pytest.fixture
def dead_redis(settings: Settings) -> str:
    """Point the limits at a loopback port where nothing listens."""
    if not port_is_free(DEAD_PORT):
        pytest.skip(f"port {DEAD_PORT} is in use")
    settings.GATEWAY_LIMITS_REDIS_URL = f"redis://127.0.0.1:{DEAD_PORT}/0"
    return settings.GATEWAY_LIMITS_REDIS_URL


def test_unreachable_redis_fails_closed_with_503(dead_redis: str) -> None:
    with pytest.raises(LimitsUnavailable) as raised:
        admit()

    assert raised.value.status == 503
    assert raised.value.code == "limits_unavailable"
    assert raised.value.type == "service_unavailable_error"


def test_unreachable_cluster_fails_closed_with_503(settings: Settings) -> None:
    settings.GATEWAY_LIMITS_REDIS_URL = f"redis+cluster://127.0.0.1:{DEAD_PORT}"

    with pytest.raises(LimitsUnavailable):
        admit()


def test_fail_open_admits_without_a_reservation_and_logs(
    dead_redis: str, settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    settings.GATEWAY_LIMITS_FAIL_OPEN = True

    with caplog.at_level(logging.WARNING, logger="routing"):
        admission = admit()

    assert admission.allowed
    assert admission.reservation is None
    assert "fail open" in caplog.text


def test_settle_with_redis_down_is_retried_until_redis_answers(
    settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    """A stream that ends while Redis is away still has its reservation reconciled afterwards."""
    daily = [usage("TOKEN", 1000)]
    live_url = settings.GATEWAY_LIMITS_REDIS_URL

    async def settle_across_an_outage() -> tuple[int, int]:
        admission = await limits_admit(limits=daily, reserve_tokens=300, slug="acme/llama", now=T0)
        assert admission.reservation is not None
        settings.GATEWAY_LIMITS_REDIS_URL = f"redis://127.0.0.1:{DEAD_PORT}/0"
        await limits_settle(reservation=admission.reservation, actual_tokens=40, now=T0)
        waiting = pending_adjustments()
        settings.GATEWAY_LIMITS_REDIS_URL = live_url
        deadline = time.monotonic() + 10
        while pending_adjustments() and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        return waiting, pending_adjustments()

    with caplog.at_level(logging.INFO, logger="routing"):
        waiting, left = run(settle_across_an_outage())

    assert (waiting, left) == (1, 0)
    assert "reconciled later" in caplog.text and "reconciled after Redis returned" in caplog.text
    used = group_usage_read(group=None, enforced={"acme/llama": daily}, now=T0)
    assert used["acme/llama"][0]["current_usage"] == 40


def test_limiter_recovers_by_itself_when_redis_comes_back(dead_redis: str) -> None:
    async def admit_until_redis_returns(directory: Path) -> tuple[bool, Admission]:
        failed_first = False
        try:
            await limits_admit(limits=LIMITS, reserve_tokens=1, slug="acme/llama", now=T0)
        except LimitsUnavailable:
            failed_first = True
        server = redis_server_start(port=DEAD_PORT, directory=directory)
        try:
            # The same loop and the same cached client: no reset, no restart.
            admission = await limits_admit(limits=LIMITS, reserve_tokens=1, slug="acme/llama")
        finally:
            redis_server_stop(server)
        return failed_first, admission

    with tempfile.TemporaryDirectory() as directory:
        failed_first, admission = run(admit_until_redis_returns(Path(directory)))

    assert failed_first
    assert admission.allowed
    assert admission.headers["x-ratelimit-remaining-requests"] == "9"


def test_a_redis_that_never_answers_fails_closed_within_the_timeout(settings: Settings) -> None:
    settings.GATEWAY_LIMITS_TIMEOUT = 0.2
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)  # connections complete in the backlog; nothing ever replies
        settings.GATEWAY_LIMITS_REDIS_URL = f"redis://127.0.0.1:{silent.getsockname()[1]}/0"
        started = time.monotonic()

        with pytest.raises(LimitsUnavailable):
            admit()

    assert time.monotonic() - started < 2


def test_usage_read_with_redis_down_answers_503(dead_redis: str) -> None:
    with pytest.raises(LimitsUnavailable):
        group_usage_read(group=None, enforced={"acme/llama": [usage("TOKEN", 10)]})


class _ClosedTransportClient:
    """A Redis client stand-in whose every command fails the way redis-py on uvloop does when
    it reconnects to a Redis that is restarting: a RuntimeError from the closed transport."""

    def __init__(self, message: str) -> None:
        self.message = message
        self.calls = 0
        self.connection_pool = self

    async def get_connection(self) -> _ClosedTransportClient:
        return self

    async def release(self, connection: object) -> None:
        return None

    async def send_packed_command(self, command: bytes, check_health: bool = True) -> None:
        self.calls += 1
        raise RuntimeError(self.message)


def test_a_client_connection_closed_under_it_counts_as_redis_unreachable() -> None:
    closed = _ClosedTransportClient(
        "unable to perform operation on <TCPTransport closed=True reading=False 0x55>; "
        "the handler is closed"
    )

    with pytest.raises(rx.ConnectionError) as raised:
        run(_evalsha(closed, keys=["k"], args=[]))  # type: ignore[arg-type]

    assert isinstance(raised.value, UNAVAILABLE)
    assert isinstance(raised.value.__cause__, RuntimeError)


def test_any_other_runtime_error_of_the_client_stays_what_it_is() -> None:
    broken = _ClosedTransportClient("Event loop is closed by a bug")

    with pytest.raises(RuntimeError, match="by a bug") as raised:
        run(_evalsha(broken, keys=["k"], args=[]))  # type: ignore[arg-type]

    assert not isinstance(raised.value, UNAVAILABLE)
