"""The wire builders answer exactly what the output serializers (the OpenAPI schema) describe."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

from django.utils import timezone
from rest_framework import serializers

from groups import selectors as group_selectors
from groups import services as group_services
from groups.models import Group, Workspace
from groups.serializers import (
    GroupDeletedSerializer,
    GroupV1Serializer,
    UserDeletedSerializer,
    UserV1Serializer,
    group_deleted_wire,
    group_detail_wire,
    groups_wire,
    user_deleted_wire,
    user_wire,
    users_wire,
)
from groups.services.audit import SYSTEM_ACTOR
from keys import services as key_services
from keys.serializers import (
    ApiKeyMintedSerializer,
    ApiKeyV1Serializer,
    UserApiKeyMintedSerializer,
    api_key_minted_wire,
    api_key_wire,
    user_api_key_minted_wire,
)
from routing.models import Endpoint
from tests.api.conftest import model


def _same_bytes(serializer: type[serializers.Serializer[Any]], wire: dict[str, Any]) -> None:
    described = serializer(wire).data
    assert json.dumps(wire) == json.dumps(described)


def _tree(workspace: Workspace) -> tuple[Group, Group]:
    root = group_services.group_create(
        workspace=workspace,
        actor=SYSTEM_ACTOR,
        external_entity_id="root",
        name="Root",
        models=[model("acme/llama", rpm=100, tpd=1000), model("acme/mistral", tpd=50)],
        limit_enforcement="CASCADING",
    )
    child = group_services.group_create(
        workspace=workspace,
        actor=SYSTEM_ACTOR,
        external_entity_id="child",
        models=[model("acme/llama", rpm=10)],
        parent_group_id=root.id,
    )
    return root, child


def test_group_wire_matches_its_serializer(workspace: Workspace, endpoints: list[Endpoint]) -> None:
    root, child = _tree(workspace)

    detail = group_detail_wire(Group.objects.get(pk=child.id))
    page = groups_wire(group_selectors.group_list(workspace=workspace, legacy=False))

    _same_bytes(GroupV1Serializer, detail)
    assert detail["effective_models"][0]["usage_limits"][0]["source_group"] == root.id
    assert [item["id"] for item in page] == [root.id, child.id]
    for item in page:
        _same_bytes(GroupV1Serializer, item)
        assert json.dumps(item) == json.dumps(group_detail_wire(Group.objects.get(pk=item["id"])))


def test_tombstones_and_users_match_their_serializers(
    workspace: Workspace, endpoints: list[Endpoint]
) -> None:
    user, _created = group_services.user_upsert(
        workspace=workspace, customer_id="u1", models=[model("acme/llama")], actor=SYSTEM_ACTOR
    )
    root, _child = _tree(workspace)

    deleted = group_services.group_delete(workspace=workspace, group_id=root.id, actor=SYSTEM_ACTOR)

    _same_bytes(UserV1Serializer, user_wire(user))
    page = users_wire(group_selectors.group_list(workspace=workspace, legacy=True))
    assert json.dumps(page) == json.dumps([user_wire(Group.objects.get(pk=user.id))])
    _same_bytes(GroupDeletedSerializer, group_deleted_wire(deleted))
    user.deleted_at = timezone.now()
    _same_bytes(UserDeletedSerializer, user_deleted_wire(user))


def test_key_wires_match_their_serializers(workspace: Workspace, endpoints: list[Endpoint]) -> None:
    root, _child = _tree(workspace)
    user, _created = group_services.user_upsert(
        workspace=workspace,
        customer_id="u1",
        models=[model("acme/llama"), model("acme/mistral")],
        actor=SYSTEM_ACTOR,
    )

    expiring, plain = key_services.api_key_create(
        workspace=workspace,
        group=root,
        actor=SYSTEM_ACTOR,
        name="n",
        expires_at=timezone.now() + timedelta(days=1),
    )
    lasting, _plain = key_services.api_key_create(workspace=workspace, group=root, actor="x")
    subset, user_plain = key_services.api_key_create(
        workspace=workspace, group=user, actor=SYSTEM_ACTOR, slugs=["acme/mistral"]
    )

    for key in (expiring, lasting):
        _same_bytes(ApiKeyV1Serializer, api_key_wire(key))
        _same_bytes(ApiKeyMintedSerializer, api_key_minted_wire(key, plain))
    minted = user_api_key_minted_wire(subset, user_plain, user=user)
    _same_bytes(UserApiKeyMintedSerializer, minted)
    assert [item["slug"] for item in minted["models"]] == ["acme/mistral"]
