"""The per-process auth/route cache: no queries when warm, invalidation within a second."""

from __future__ import annotations

import asyncio
import time

import httpx
import pytest
from django.db.backends.utils import CursorWrapper

from groups.services import custom_domain_add, group_update, workspace_set_onboarded
from groups.services.audit import SYSTEM_ACTOR
from keys.services import api_key_revoke
from routing import authcache, ttl_cache
from routing.metrics import registry
from routing.services import endpoint_delete
from tests.proxy.conftest import SLUG, compatible_target, tenant_build
from tests.waiting import wait_until

CHAT = "/v1/chat/completions"
BODY = {"model": SLUG, "messages": [{"role": "user", "content": "hi"}]}


def _post(gateway, key, headers=None, stream=False):
    body = {**BODY, "stream": True} if stream else BODY
    headers = {"Authorization": f"Bearer {key}", **(headers or {})}
    return httpx.post(f"{gateway.url}{CHAT}", json=body, headers=headers, timeout=10)


@pytest.fixture
def query_log(monkeypatch):
    """Every SQL statement run by any thread of this process."""
    statements: list[str] = []
    original = CursorWrapper._execute_with_wrappers  # type: ignore[attr-defined]

    def counting(self, sql, *args, **kwargs):
        statements.append(sql)
        return original(self, sql, *args, **kwargs)

    monkeypatch.setattr(CursorWrapper, "_execute_with_wrappers", counting)
    return statements


def test_warm_requests_run_no_database_query(gateway, tenant, query_log):
    _post(gateway, tenant.key)
    httpx.get(f"{gateway.url}/v1/models", headers={"Authorization": f"Bearer {tenant.key}"})

    for _ in range(5):  # a foreign invalidation (another test run's publish) restarts the window
        generation, query_log[:] = authcache.cache_generation(), []
        statuses = [_post(gateway, tenant.key, stream=i % 2 == 1).status_code for i in range(10)]
        statuses.append(
            httpx.get(
                f"{gateway.url}/v1/models", headers={"Authorization": f"Bearer {tenant.key}"}
            ).status_code
        )
        if authcache.cache_generation() == generation:
            break

    assert statuses == [200] * 11
    assert query_log == []


def _version_reads_by_requests() -> float:
    name = "gateway_cache_version_checks_total"
    return sum(registry.get_sample_value(name, {"result": r}) or 0.0 for r in ("ok", "failed"))


def test_warm_requests_make_no_redis_round_trip_to_check_the_cache(gateway, tenant):
    headers = {"Authorization": f"Bearer {tenant.key}"}
    assert httpx.get(f"{gateway.url}/v1/models", headers=headers).status_code == 200
    wait_until(lambda: authcache.cache_confirmed_age() < ttl_cache.TRUST_SECONDS)
    before, started, statuses = _version_reads_by_requests(), time.monotonic(), set()

    while time.monotonic() - started < 3 * ttl_cache.TRUST_SECONDS:  # several trust windows
        statuses.add(httpx.get(f"{gateway.url}/v1/models", headers=headers).status_code)

    assert statuses == {200}
    assert _version_reads_by_requests() == before


def test_cold_key_is_loaded_once_for_concurrent_requests(gateway, tenant, query_log):
    import concurrent.futures

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        statuses = list(pool.map(lambda _: _post(gateway, tenant.key).status_code, range(8)))

    assert statuses == [200] * 8
    key_lookups = [sql for sql in query_log if "keys_apikey" in sql]
    assert len(key_lookups) == 1


def test_unknown_key_is_cached_briefly(gateway, tenant, query_log):
    for attempt in range(5):  # a foreign invalidation (another test run's publish) restarts
        bad = f"sky_notakeyatal{attempt}.0000000000000000000000000000000000000000"
        generation, query_log[:] = authcache.cache_generation(), []
        statuses = [_post(gateway, bad).status_code for _ in range(3)]
        if authcache.cache_generation() == generation:
            break

    assert statuses == [401] * 3
    assert len([sql for sql in query_log if "keys_apikey" in sql]) == 1


def _rejected_within(gateway, key, seconds, expected=401):
    started = time.monotonic()
    wait_until(lambda: _post(gateway, key).status_code == expected, timeout=seconds, interval=0.02)
    return time.monotonic() - started


def test_revoked_key_stops_working_within_a_second(gateway, tenant):
    assert _post(gateway, tenant.key).status_code == 200

    api_key_revoke(workspace=tenant.workspace, prefix=tenant.prefix, actor=SYSTEM_ACTOR)

    assert _rejected_within(gateway, tenant.key, 1.0) < 1.0


def test_offboarded_workspace_keys_stop_working(gateway, tenant):
    assert _post(gateway, tenant.key).status_code == 200

    workspace_set_onboarded(workspace=tenant.workspace, onboarded=False, actor=SYSTEM_ACTOR)

    _rejected_within(gateway, tenant.key, 1.0)


def test_group_losing_the_slug_gets_404(gateway, tenant):
    assert _post(gateway, tenant.key).status_code == 200

    group_update(
        workspace=tenant.workspace, group_id=tenant.group.id, actor=SYSTEM_ACTOR, models=[]
    )

    _rejected_within(gateway, tenant.key, 1.0, expected=404)


def test_deleted_endpoint_stops_routing(gateway, tenant):
    assert _post(gateway, tenant.key).status_code == 200

    endpoint_delete(workspace=tenant.workspace, endpoint_id=tenant.endpoint.id, actor=SYSTEM_ACTOR)

    _rejected_within(gateway, tenant.key, 1.0, expected=404)


def test_custom_domain_only_accepts_its_own_workspaces_keys(
    gateway, tenant, other_workspace, backup_upstream
):
    other = tenant_build(
        workspace=other_workspace,
        targets=[compatible_target(backup_upstream.url)],
        slug="globex/model",
    )
    custom_domain_add(workspace=tenant.workspace, host="api.acme.example", actor=SYSTEM_ACTOR)
    host = {"Host": "api.acme.example"}

    own = _post(gateway, tenant.key, headers=host)
    foreign = httpx.post(
        f"{gateway.url}{CHAT}",
        json={**BODY, "model": "globex/model"},
        headers={"Authorization": f"Bearer {other.key}", **host},
    )
    default_host = httpx.post(
        f"{gateway.url}{CHAT}",
        json={**BODY, "model": "globex/model"},
        headers={"Authorization": f"Bearer {other.key}"},
    )

    assert own.status_code == 200
    assert foreign.status_code == 401
    assert default_host.status_code == 200


class _Outage:
    """A fill that answers from a dict until `down` is set, then fails like an unreachable DB."""

    def __init__(self, values):
        self.values = values
        self.down = False
        self.calls = 0

    async def __call__(self, key):
        self.calls += 1
        if self.down:
            from django.db import OperationalError

            raise OperationalError("connection refused")
        return self.values.get(key)


def _get(cache, outage, key):
    return asyncio.run(cache.get(key, lambda: outage(key), lambda value: "ws_1"))


def test_database_outage_serves_known_entries_and_503s_unknown_ones():
    authcache.cache_reset()
    cache: ttl_cache.TtlCache[str] = ttl_cache.TtlCache(confirm=authcache.version_confirm)
    outage = _Outage({"known": "entry"})
    assert _get(cache, outage, "known") == "entry"
    outage.down = True
    cache.slots["known"].expires = 0.0  # the entry expires; its refill fails
    authcache.version_observe(0, sent_at=time.monotonic())  # invalidations still reach us

    assert _get(cache, outage, "known") == "entry"
    calls = outage.calls
    assert _get(cache, outage, "known") == "entry"
    assert outage.calls == calls, "a stale entry is kept for a moment, not refilled per request"
    with pytest.raises(ttl_cache.ConfigurationUnavailable) as caught:
        _get(cache, outage, "never-seen")
    assert caught.value.status == 503 and caught.value.headers == {"Retry-After": "1"}


def test_invalidated_entries_are_not_served_during_an_outage():
    cache: ttl_cache.TtlCache[str] = ttl_cache.TtlCache(confirm=authcache.version_confirm)
    outage = _Outage({"revoked": "entry"})
    _get(cache, outage, "revoked")
    outage.down = True
    cache.drop_workspace("ws_1")

    with pytest.raises(ttl_cache.ConfigurationUnavailable):
        _get(cache, outage, "revoked")


def test_database_outage_without_a_recent_version_check_serves_nothing_cached():
    cache: ttl_cache.TtlCache[str] = ttl_cache.TtlCache(confirm=authcache.version_confirm)
    outage = _Outage({"known": "entry"})
    assert _get(cache, outage, "known") == "entry"
    outage.down = True
    cache.slots["known"].expires = 0.0
    authcache.cache_reset()  # no version read has confirmed this process's caches

    with pytest.raises(ttl_cache.ConfigurationUnavailable):
        _get(cache, outage, "known")
