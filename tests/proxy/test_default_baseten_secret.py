"""BASETEN targets without secret_id use the workspace default Baseten secret, or fail."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from groups.models import Secret, Workspace
from groups.services import secret_create, secret_delete, workspace_set_default_baseten_secret
from groups.services.audit import SYSTEM_ACTOR
from tests.fakes.model_server import FakeModelServerThread
from tests.proxy.conftest import SLUG, GatewayThread, Tenant, tenant_build
from tests.waiting import wait_until

BASETEN = {"provider": "BASETEN", "model_id": "abcd1234"}
CHAT = {"model": SLUG, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}


def _chat(gateway: GatewayThread, tenant: Tenant) -> httpx.Response:
    return httpx.post(
        f"{gateway.url}/v1/chat/completions",
        json=CHAT,
        headers={"Authorization": f"Bearer {tenant.key}"},
    )


def _secret(workspace: Workspace, name: str, value: str) -> Secret:
    return secret_create(workspace=workspace, name=name, value=value, actor=SYSTEM_ACTOR)


@pytest.fixture
def baseten_upstream(settings: Any, upstream: FakeModelServerThread) -> FakeModelServerThread:
    """The fake model server standing in for Baseten's model URLs."""
    settings.GATEWAY_BASETEN_URL_TEMPLATE = upstream.url
    return upstream


def test_the_upstream_receives_the_workspaces_default_secret(
    gateway: GatewayThread, workspace: Workspace, baseten_upstream: FakeModelServerThread
) -> None:
    default = _secret(workspace, "baseten", "bt-workspace-default")
    workspace_set_default_baseten_secret(workspace=workspace, secret=default, actor=SYSTEM_ACTOR)
    tenant = tenant_build(workspace=workspace, targets=[dict(BASETEN)])

    response = _chat(gateway, tenant)

    assert response.status_code == 200, response.text
    # The upstream gets the workspace's secret, not the customer's key; the customer never sees it.
    assert baseten_upstream.requests[-1].headers["authorization"] == "Bearer bt-workspace-default"
    assert tenant.key not in str(baseten_upstream.requests[-1].headers)
    assert "bt-workspace-default" not in response.text + str(response.headers)


def test_a_target_naming_a_secret_uses_that_one(
    gateway: GatewayThread, workspace: Workspace, baseten_upstream: FakeModelServerThread
) -> None:
    default = _secret(workspace, "baseten", "bt-workspace-default")
    own = _secret(workspace, "baseten-eu", "bt-own")
    workspace_set_default_baseten_secret(workspace=workspace, secret=default, actor=SYSTEM_ACTOR)
    tenant = tenant_build(workspace=workspace, targets=[{**BASETEN, "secret_id": own.id}])

    response = _chat(gateway, tenant)

    assert response.status_code == 200, response.text
    assert baseten_upstream.requests[-1].headers["authorization"] == "Bearer bt-own"


@pytest.mark.parametrize("removal", ["unset", "secret deleted"])
def test_without_the_default_calls_fail_clearly_and_never_go_upstream(
    gateway: GatewayThread,
    workspace: Workspace,
    baseten_upstream: FakeModelServerThread,
    removal: str,
) -> None:
    default = _secret(workspace, "baseten", "bt-workspace-default")
    workspace_set_default_baseten_secret(workspace=workspace, secret=default, actor=SYSTEM_ACTOR)
    tenant = tenant_build(workspace=workspace, targets=[dict(BASETEN)])
    assert _chat(gateway, tenant).status_code == 200

    if removal == "unset":
        workspace_set_default_baseten_secret(workspace=workspace, secret=None, actor=SYSTEM_ACTOR)
    else:
        secret_delete(secret=default, actor=SYSTEM_ACTOR)
    wait_until(lambda: _chat(gateway, tenant).status_code != 200, timeout=5)
    sent = len(baseten_upstream.requests)
    response = _chat(gateway, tenant)

    assert response.status_code == 502
    error = response.json()["error"]
    assert error["code"] == "upstream_credential_missing"
    assert "default Baseten secret" in error["message"]
    assert response.headers["x-should-retry"] == "false"
    assert len(baseten_upstream.requests) == sent
    assert all("authorization" in r.headers for r in baseten_upstream.requests)


def test_a_missing_default_falls_back_to_the_next_target(
    gateway: GatewayThread,
    workspace: Workspace,
    baseten_upstream: FakeModelServerThread,
    backup_upstream: FakeModelServerThread,
) -> None:
    default = _secret(workspace, "baseten", "bt-workspace-default")
    workspace_set_default_baseten_secret(workspace=workspace, secret=default, actor=SYSTEM_ACTOR)
    backup = {"provider": "OPENAI_COMPATIBLE", "base_url": backup_upstream.url, "target_model": "m"}
    tenant = tenant_build(workspace=workspace, targets=[dict(BASETEN), backup])
    workspace_set_default_baseten_secret(workspace=workspace, secret=None, actor=SYSTEM_ACTOR)

    response = _chat(gateway, tenant)

    assert response.status_code == 200, response.text
    assert baseten_upstream.requests == [] and len(backup_upstream.requests) == 1
