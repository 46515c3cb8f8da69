"""A revoked key keeps working only about a second, whatever happens to the invalidation path.

The gateway reaches Redis through one TCP relay and the control plane revoking the key through
another; they break the way networks break. Each test revokes a working key under one fault and
probes it with GET /v1/models, which needs nothing but the key (no limits, no usage record), so a
key the gateway still trusts is answered at once with a 200.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import httpx
import pytest
from django.db import connections

from groups.services.audit import SYSTEM_ACTOR
from keys.services import api_key_revoke
from routing import authcache, ttl_cache
from routing.lifecycle import background_tasks
from tests.fakes.redis_relay import RedisRelay
from tests.proxy.conftest import GatewayThread, Tenant, gateway_serve
from tests.waiting import wait_until

# No request that arrives later than this after the revocation is served.
REVOKED_WITHIN = 1.0


@pytest.fixture
def relay(settings) -> Iterator[RedisRelay]:
    """The gateway's way to Redis (REDIS_URL)."""
    with RedisRelay(settings.REDIS_URL) as relay:
        settings.REDIS_URL = relay.url
        yield relay


@pytest.fixture
def control_relay(settings) -> Iterator[RedisRelay]:
    """The control plane's way to Redis (the Django cache connection that bumps and publishes)."""
    with RedisRelay(settings.CACHES["default"]["LOCATION"]) as relay:
        settings.CACHES = {"default": {**settings.CACHES["default"], "LOCATION": relay.url}}
        yield relay


@pytest.fixture
def gateway(relay: RedisRelay, transactional_db: None) -> Iterator[GatewayThread]:
    """The gateway as a real server, started after the relay so that it uses it."""
    yield from gateway_serve()


def _status(gateway: GatewayThread, key: str) -> int:
    headers = {"Authorization": f"Bearer {key}"}
    return httpx.get(f"{gateway.url}/v1/models", headers=headers, timeout=10).status_code


def _warm(gateway: GatewayThread, key: str) -> None:
    """Let the invalidations of the tenant's creation pass (no eviction for a second), then have
    the key served: it is cached and trusted when the fault strikes."""
    seen = {"generation": authcache.cache_generation(), "at": time.monotonic()}

    def settled() -> bool:
        if authcache.cache_generation() != seen["generation"]:
            seen.update(generation=authcache.cache_generation(), at=time.monotonic())
        return time.monotonic() - seen["at"] > 1.0

    wait_until(settled, timeout=10, what="caches settled")
    assert _status(gateway, key) == 200


def _revoke_in_background(tenant: Tenant) -> threading.Thread:
    """Revoke from another thread: under some faults the after-commit bump waits for a timeout."""

    def revoke() -> None:
        try:
            api_key_revoke(workspace=tenant.workspace, prefix=tenant.prefix, actor=SYSTEM_ACTOR)
        finally:
            connections.close_all()

    thread = threading.Thread(target=revoke)
    thread.start()
    return thread


def _last_served(gateway: GatewayThread, key: str, since: float, refused: set[int]) -> float:
    """Probe until the key is refused (with a status in `refused`); how long after `since` the
    last probe that was still served started (0 when none was)."""
    last = 0.0

    def probe() -> bool:
        nonlocal last
        started = time.monotonic()
        status = _status(gateway, key)
        if status == 200:
            last = started - since
        return status in refused

    wait_until(probe, timeout=15, what="key refused")
    return last


def _listener_up(relay: RedisRelay, since: float) -> None:
    wait_until(lambda: relay.sent_since(b"SUBSCRIBE", since), timeout=10, what="listener up")


def test_revoked_key_dies_within_a_second_when_publish_fails(
    control_relay: RedisRelay, gateway: GatewayThread, tenant: Tenant
) -> None:
    _warm(gateway, tenant.key)
    control_relay.cut_on(b"PUBLISH")

    revoked = time.monotonic()
    _revoke_in_background(tenant).join(timeout=10)

    assert control_relay.cuts >= 1, "the invalidation message was not lost"
    assert _last_served(gateway, tenant.key, revoked, {401}) < REVOKED_WITHIN


def test_revoked_key_dies_within_a_second_when_the_listener_connection_half_opens(
    relay: RedisRelay, gateway: GatewayThread, tenant: Tenant
) -> None:
    _warm(gateway, tenant.key)
    _listener_up(relay, 0)

    # Every connection that subscribed to invalidations or read the version silently stops.
    relay.blackhole(matching=b"gw:cfg")
    revoked = time.monotonic()
    revoking = _revoke_in_background(tenant)

    assert _last_served(gateway, tenant.key, revoked, {401}) < REVOKED_WITHIN
    _listener_up(relay, revoked)  # the dead connection was noticed and replaced
    revoking.join(timeout=10)
    assert not revoking.is_alive()


def test_revoked_key_dies_within_a_second_when_the_listener_task_is_killed(
    relay: RedisRelay, control_relay: RedisRelay, gateway: GatewayThread, tenant: Tenant
) -> None:
    _warm(gateway, tenant.key)
    _listener_up(relay, 0)
    listener = background_tasks()["cache-listener"]
    control_relay.cut_on(b"PUBLISH")  # a restarted listener must not be what saves the day

    listener.get_loop().call_soon_threadsafe(listener.cancel)
    wait_until(listener.done, what="listener killed")
    revoked = time.monotonic()
    _revoke_in_background(tenant).join(timeout=10)

    assert _last_served(gateway, tenant.key, revoked, {401}) < REVOKED_WITHIN
    restarted = wait_until(lambda: background_tasks().get("cache-listener"), what="restart")
    assert restarted is not listener and not restarted.done()
    wait_until(lambda: authcache.cache_confirmed_age() < ttl_cache.TRUST_SECONDS, what="confirms")


def test_revoked_key_is_never_served_while_redis_is_unreachable(
    relay: RedisRelay, control_relay: RedisRelay, gateway: GatewayThread, tenant: Tenant
) -> None:
    _warm(gateway, tenant.key)

    for way in (relay, control_relay):  # Redis answers no one, on old connections or new
        way.blackhole(new_connections=True)
    revoked = time.monotonic()
    revoking = _revoke_in_background(tenant)

    assert _last_served(gateway, tenant.key, revoked, {401, 503}) < REVOKED_WITHIN
    later = [_status(gateway, tenant.key) for _ in range(20)]
    assert 200 not in later
    revoking.join(timeout=10)
    assert not revoking.is_alive(), "a black-holed Redis hung the revocation"
