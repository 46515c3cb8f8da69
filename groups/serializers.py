"""Wire shapes of groups and legacy users: small input and output serializers.

Models lists are validated by the services (groups.limits), so the API and the admin share one rule
set and one set of error codes; the serializers here only describe them for the schema.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from rest_framework import serializers

from gateway_project.kernel.apikit import TimestampField, batch_of, timestamp_wire
from groups import selectors
from groups.limit_serializers import EffectiveModelSerializer, ModelConfigOutSerializer, ModelsField
from groups.limits import effective_limits, effective_wire, specs_wire
from groups.models import Group, LimitEnforcement
from groups.services.batch import CreatedGroup


class GroupMetadataSerializer(serializers.Serializer[Any]):
    name = serializers.CharField(max_length=255, allow_blank=True, required=False, default="")
    external_entity_id = serializers.CharField(min_length=1, max_length=255, trim_whitespace=False)


class GroupHierarchySerializer(serializers.Serializer[Any]):
    limit_enforcement = serializers.ChoiceField(
        choices=LimitEnforcement.choices, required=False, allow_null=True, default=None
    )
    parent_group_id = serializers.CharField(
        max_length=40, required=False, allow_null=True, default=None
    )


class GroupCreateSerializer(serializers.Serializer[Any]):
    metadata = GroupMetadataSerializer()
    models = ModelsField()
    hierarchy = GroupHierarchySerializer(required=False)


class GroupBatchCreateSerializer(serializers.Serializer[Any]):
    groups = batch_of(GroupCreateSerializer(), help_text="1..1,000 group create bodies")


class GroupNameSerializer(serializers.Serializer[Any]):
    name = serializers.CharField(max_length=255, allow_blank=True)


class GroupUpdateSerializer(serializers.Serializer[Any]):
    metadata = GroupNameSerializer(required=False)
    models = ModelsField(required=False)


class GroupListQuerySerializer(serializers.Serializer[Any]):
    external_entity_id = serializers.CharField(
        max_length=255, required=False, trim_whitespace=False
    )


class GroupV1Serializer(serializers.Serializer[Any]):
    id = serializers.CharField()
    metadata = GroupMetadataSerializer()
    models = ModelConfigOutSerializer(many=True)
    effective_models = EffectiveModelSerializer(many=True)
    hierarchy = GroupHierarchySerializer()
    created_at = TimestampField()


class GroupBatchSerializer(serializers.Serializer[Any]):
    items = GroupV1Serializer(many=True, help_text="The created groups, in the order given")


class GroupDeletedSerializer(serializers.Serializer[Any]):
    id = serializers.CharField()
    metadata = GroupMetadataSerializer()
    deleted_at = TimestampField()


class UserUpsertSerializer(serializers.Serializer[Any]):
    customer_id = serializers.CharField(min_length=1, max_length=255, trim_whitespace=False)
    models = ModelsField()


class UserV1Serializer(serializers.Serializer[Any]):
    id = serializers.CharField()
    customer_id = serializers.CharField()
    models = ModelConfigOutSerializer(many=True)
    created_at = TimestampField()


class UserDeletedSerializer(serializers.Serializer[Any]):
    id = serializers.CharField()
    customer_id = serializers.CharField()
    deleted_at = TimestampField()


IMMUTABLE_GROUP_FIELDS = ("hierarchy", "metadata.external_entity_id")


def _metadata(group: Group) -> dict[str, str]:
    return {"name": group.name, "external_entity_id": group.external_entity_id}


# The wire builders below produce what the output serializers above describe, key for key and in
# their field order, straight from the rows: a page of 100 groups through `Serializer.data` cost
# ~3 ms a group. tests/api prove the bytes unchanged; the serializers remain the schema.


def group_wire(
    group: Group,
    *,
    effective_models: list[dict[str, Any]],
    models: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """GroupV1 of one group (models read, from the prefetch cache when present, unless given)."""
    return {
        "id": group.id,
        "metadata": _metadata(group),
        "models": selectors.group_models(group=group) if models is None else models,
        "effective_models": effective_models,
        "hierarchy": {
            "limit_enforcement": group.limit_enforcement,
            "parent_group_id": group.parent_id,
        },
        "created_at": timestamp_wire(group.created_at),
    }


def group_detail_wire(group: Group) -> dict[str, Any]:
    """GroupV1 of a single group."""
    return group_wire(group, effective_models=selectors.group_effective_models(group=group))


def groups_wire(groups: Iterable[Group]) -> list[dict[str, Any]]:
    """GroupV1 of a page of groups, in a constant number of queries."""
    groups = list(groups)
    wires = selectors.groups_models_wire(groups=groups)
    return [
        group_wire(group, models=wires[group.id][0], effective_models=wires[group.id][1])
        for group in groups
    ]


def group_create_params(data: dict[str, Any]) -> dict[str, Any]:
    """group_create's parameters from a validated GroupCreate body."""
    hierarchy = data.get("hierarchy") or {}
    return {
        "external_entity_id": data["metadata"]["external_entity_id"],
        "name": data["metadata"].get("name", ""),
        "models": data["models"],
        "limit_enforcement": hierarchy.get("limit_enforcement"),
        "parent_group_id": hierarchy.get("parent_group_id"),
    }


def created_groups_wire(created: Iterable[CreatedGroup]) -> list[dict[str, Any]]:
    """GroupV1 of groups a batch created, from what the batch checked them against."""
    return [
        group_wire(
            entry.group,
            models=specs_wire(entry.own.models),
            effective_models=effective_wire(
                effective_limits(chain=entry.chain, mode=entry.group.limit_enforcement)
            ),
        )
        for entry in created
    ]


def group_deleted_wire(group: Group) -> dict[str, Any]:
    """The tombstone of a deleted group."""
    return {
        "id": group.id,
        "metadata": _metadata(group),
        "deleted_at": timestamp_wire(group.deleted_at),
    }


def user_wire(group: Group, *, models: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """A legacy user `{id, customer_id, models, created_at}` (models read unless given)."""
    return {
        "id": group.id,
        "customer_id": group.external_entity_id,
        "models": selectors.group_models(group=group) if models is None else models,
        "created_at": timestamp_wire(group.created_at),
    }


def users_wire(users: Iterable[Group]) -> list[dict[str, Any]]:
    """Legacy users of a page, their models read in one query."""
    users = list(users)
    limits = selectors.groups_limits(group_ids=[user.id for user in users])
    return [user_wire(user, models=specs_wire(limits[user.id].models)) for user in users]


def user_deleted_wire(group: Group) -> dict[str, Any]:
    """The tombstone of a deleted user."""
    return {
        "id": group.id,
        "customer_id": group.external_entity_id,
        "deleted_at": timestamp_wire(group.deleted_at),
    }
