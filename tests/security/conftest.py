"""Security suite fixtures: two fully populated tenants, clients holding their keys."""

from __future__ import annotations

import base64
from dataclasses import dataclass, field
from datetime import timedelta

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from django.utils import timezone
from rest_framework.test import APIClient

from billing.models import UsageEvent
from groups import services as group_services
from groups.models import Workspace
from groups.services.audit import SYSTEM_ACTOR
from keys import services as key_services
from routing import services as routing_services
from tests.proxy.conftest import (  # noqa: F401 - fixtures of this suite
    gateway,
    gateway_plain,
    tenant,
    upstream,
)


@dataclass
class World:
    """One object of every kind in a workspace, and the keys to reach them."""

    workspace: Workspace
    manage_key: str
    signing_key: Ed25519PrivateKey
    ids: dict[str, str]  # path parameter values by name, plus a few more identifiers
    secrets: list[str] = field(default_factory=list)  # plaintexts that must never leak

    def identifiers(self) -> set[str]:
        """Every id, prefix, slug and external id of this tenant (none may reach another)."""
        return {value for value in self.ids.values() if value}

    def client(self) -> APIClient:
        client = APIClient()
        client.credentials(HTTP_AUTHORIZATION=f"Bearer {self.manage_key}")
        return client


def model(slug: str) -> dict[str, object]:
    return {
        "slug": slug,
        "rate_limits": [{"type": "REQUEST", "unit": "MINUTE", "threshold": 10}],
        "usage_limits": [{"type": "TOKEN", "unit": "DAY", "threshold": 1000}],
    }


def world_build(workspace: Workspace, prefix: str) -> World:
    """Populate `workspace` (owning org prefix `prefix`) through the services."""
    signing_key = Ed25519PrivateKey.generate()
    public = signing_key.public_key().public_bytes_raw()
    workspace.ed25519_public_key = base64.b64encode(public).decode()
    workspace.save(update_fields=["ed25519_public_key"])
    secret = group_services.secret_create(
        workspace=workspace,
        name=f"{prefix}-upstream",
        value=f"{prefix}-provider-credential-0451",
        actor=SYSTEM_ACTOR,
    )
    slug = f"{prefix}/llama"
    endpoint = routing_services.endpoint_create(
        workspace=workspace,
        actor=SYSTEM_ACTOR,
        slug=slug,
        targets=[
            {
                "provider": "OPENAI_COMPATIBLE",
                "base_url": "http://127.0.0.1:9/v1",
                "target_model": "m",
                "secret_id": secret.id,
            }
        ],
    )
    group = group_services.group_create(
        workspace=workspace,
        actor=SYSTEM_ACTOR,
        external_entity_id=f"{prefix}-root",
        name=f"{prefix} root",
        models=[model(slug)],
        limit_enforcement="CASCADING",
    )
    child = group_services.group_create(
        workspace=workspace,
        actor=SYSTEM_ACTOR,
        external_entity_id=f"{prefix}-child",
        models=[model(slug)],
        parent_group_id=group.id,
    )
    user, _ = group_services.user_upsert(
        workspace=workspace, customer_id=f"{prefix}-user", models=[model(slug)], actor=SYSTEM_ACTOR
    )
    group_key, group_plain = key_services.api_key_create(
        workspace=workspace, group=group, actor=SYSTEM_ACTOR, name=f"{prefix} group key"
    )
    user_key, user_plain = key_services.api_key_create(
        workspace=workspace, group=user, actor=SYSTEM_ACTOR, name=f"{prefix} user key"
    )
    _mk, manage_plain = key_services.management_key_create(workspace=workspace, actor=SYSTEM_ACTOR)
    UsageEvent.objects.create(
        request_id=f"{prefix}-request-1",
        timestamp=timezone.now() - timedelta(hours=1),
        workspace=workspace,
        group=group,
        external_entity_id=group.external_entity_id,
        api_key_prefix=group_key.prefix,
        model_slug=slug,
        request_metadata={"who": prefix},
        status="completed",
        input_tokens=1,
        output_tokens=2,
    )
    ids = {
        "endpoint_id": endpoint.id,
        "group_id": group.id,
        "child_id": child.id,
        "user_id": user.id,
        "group_key": group_key.prefix,
        "user_key": user_key.prefix,
        "slug": slug,
        "secret_id": secret.id,
        "external_id": group.external_entity_id,
        "user_external_id": user.external_entity_id,
        "request_id": f"{prefix}-request-1",
        "workspace_id": workspace.id,
    }
    plaintexts = [group_plain, user_plain, manage_plain, f"{prefix}-provider-credential-0451"]
    return World(workspace, manage_plain, signing_key, ids, plaintexts)


@pytest.fixture
def world_a(workspace: Workspace) -> World:
    """Tenant A: `acme`."""
    return world_build(workspace, "acme")


@pytest.fixture
def world_b(other_workspace: Workspace) -> World:
    """Tenant B: `globex`."""
    return world_build(other_workspace, "globex")
