"""Fixtures of the keys suite: a group and a legacy user to hold keys, an Ed25519 key pair."""

from __future__ import annotations

import base64

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from groups.models import Group, Workspace
from groups.services import group_create, user_upsert
from groups.services.audit import SYSTEM_ACTOR
from routing.models import Endpoint

SLUGS = ("acme/llama", "acme/qwen")


@pytest.fixture
def endpoints(workspace: Workspace) -> tuple[str, ...]:
    """Live endpoints of `workspace` (created directly: routing is not under test here)."""
    for slug in SLUGS:
        Endpoint.objects.create(workspace=workspace, slug=slug)
    return SLUGS


def models(*slugs: str) -> list[dict[str, object]]:
    return [{"slug": s, "rate_limits": [], "usage_limits": []} for s in slugs]


@pytest.fixture
def group(workspace: Workspace, endpoints: tuple[str, ...]) -> Group:
    return group_create(
        workspace=workspace, actor=SYSTEM_ACTOR, external_entity_id="cust_1", models=models(*SLUGS)
    )


@pytest.fixture
def legacy_user(workspace: Workspace, endpoints: tuple[str, ...]) -> Group:
    user, _ = user_upsert(
        workspace=workspace, customer_id="user_1", models=models("acme/llama"), actor=SYSTEM_ACTOR
    )
    return user


@pytest.fixture
def signing_key(workspace: Workspace) -> Ed25519PrivateKey:
    """A private key whose public half (raw, base64) is the workspace's registration key."""
    private = Ed25519PrivateKey.generate()
    raw = private.public_key().public_bytes_raw()
    workspace.ed25519_public_key = base64.b64encode(raw).decode()
    workspace.save(update_fields=["ed25519_public_key"])
    return private
