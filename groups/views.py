"""Management API for groups and legacy users: one view per resource, thin."""

from __future__ import annotations

from drf_spectacular.utils import OpenApiParameter
from rest_framework.exceptions import APIException
from rest_framework.request import Request
from rest_framework.response import Response

from gateway_project.kernel.apikit import (
    GatewayAPIView,
    api_schema,
    body_object,
    list_schema,
    patch_validate,
)
from gateway_project.kernel.errors import GatewayError
from groups import selectors, services
from groups.models import Group
from groups.serializers import (
    IMMUTABLE_GROUP_FIELDS,
    GroupBatchCreateSerializer,
    GroupBatchSerializer,
    GroupCreateSerializer,
    GroupDeletedSerializer,
    GroupListQuerySerializer,
    GroupUpdateSerializer,
    GroupV1Serializer,
    UserDeletedSerializer,
    UserUpsertSerializer,
    UserV1Serializer,
    created_groups_wire,
    group_create_params,
    group_deleted_wire,
    group_detail_wire,
    groups_wire,
    user_deleted_wire,
    user_wire,
    users_wire,
)

GROUPS = ["groups"]
USERS = ["users (legacy)"]


class GroupListView(GatewayAPIView):
    @list_schema(
        GroupV1Serializer,
        tags=GROUPS,
        summary="List groups",
        operation_id="groups_list",
        parameters=[
            OpenApiParameter(
                "external_entity_id", str, description="Exact match (at most 1 item)."
            ),
        ],
    )
    def get(self, request: Request) -> Response:
        query = self.query(GroupListQuerySerializer)

        def rows(after: str | None, count: int) -> list[Group]:
            return selectors.group_page(
                workspace=self.workspace,
                after=after,
                count=count,
                external_entity_id=query.get("external_entity_id"),
                legacy=False,
            )

        return self.page_read(rows, groups_wire)

    @api_schema(
        request=GroupCreateSerializer,
        response=GroupV1Serializer,
        tags=GROUPS,
        summary="Create a group",
        operation_id="groups_create",
    )
    def post(self, request: Request) -> Response:
        data = self.input(GroupCreateSerializer)
        group = services.group_create(
            workspace=self.workspace, actor=self.actor, **group_create_params(data)
        )
        return Response(group_detail_wire(group))


class GroupBatchView(GatewayAPIView):
    @api_schema(
        request=GroupBatchCreateSerializer,
        response=GroupBatchSerializer,
        tags=GROUPS,
        summary="Create up to 1,000 groups at once, all or nothing",
        operation_id="groups_batch_create",
        description=(
            "Each item is a group create body, checked by the same rules; an error names its item "
            "(`param` `groups[3].metadata.external_entity_id`) and nothing is created. An "
            "external_entity_id already held by a live group, or given twice, fails the batch."
        ),
    )
    def post(self, request: Request) -> Response:
        items = self.input_many(GroupCreateSerializer, field="groups")
        created = services.group_create_many(
            workspace=self.workspace,
            actor=self.actor,
            items=[group_create_params(item) for item in items],
        )
        return Response({"items": created_groups_wire(created)})


class GroupDetailView(GatewayAPIView):
    @api_schema(
        response=GroupV1Serializer, tags=GROUPS, summary="Get a group", operation_id="groups_get"
    )
    def get(self, request: Request, group_id: str) -> Response:
        group = selectors.group_get(workspace=self.workspace, group_id=group_id, legacy=False)
        return Response(group_detail_wire(group))

    @api_schema(
        request=GroupUpdateSerializer,
        response=GroupV1Serializer,
        tags=GROUPS,
        summary="Rename a group or replace its models",
        operation_id="groups_update",
    )
    def patch(self, request: Request, group_id: str) -> Response:
        try:
            data = patch_validate(
                GroupUpdateSerializer, body_object(request), immutable=IMMUTABLE_GROUP_FIELDS
            )
        except (GatewayError, APIException):
            # Not a group of the workspace is a 404 whatever its body; read only when the body
            # fails, as the update reads the group under its lock.
            selectors.group_get(workspace=self.workspace, group_id=group_id, legacy=False)
            raise
        group = services.group_update(
            workspace=self.workspace,
            group_id=group_id,
            actor=self.actor,
            name=(data.get("metadata") or {}).get("name"),
            models=data.get("models"),
        )
        return Response(group_detail_wire(group))

    @api_schema(
        response=GroupDeletedSerializer,
        tags=GROUPS,
        summary="Delete a group and its subtree",
        operation_id="groups_delete",
    )
    def delete(self, request: Request, group_id: str) -> Response:
        selectors.group_get(workspace=self.workspace, group_id=group_id, legacy=False)
        group = services.group_delete(workspace=self.workspace, group_id=group_id, actor=self.actor)
        return Response(group_deleted_wire(group))


class UserListView(GatewayAPIView):
    @list_schema(UserV1Serializer, tags=USERS, summary="List users", operation_id="users_list")
    def get(self, request: Request) -> Response:
        def rows(after: str | None, count: int) -> list[Group]:
            return selectors.group_page(
                workspace=self.workspace, after=after, count=count, legacy=True
            )

        return self.page_read(rows, users_wire)

    @api_schema(
        request=UserUpsertSerializer,
        response=UserV1Serializer,
        tags=USERS,
        summary="Create or update a user by customer_id",
        operation_id="users_upsert",
    )
    def post(self, request: Request) -> Response:
        data = self.input(UserUpsertSerializer)
        user, _created = services.user_upsert(
            workspace=self.workspace,
            customer_id=data["customer_id"],
            models=data["models"],
            actor=self.actor,
        )
        return Response(user_wire(user))


class UserDetailView(GatewayAPIView):
    @api_schema(
        response=UserV1Serializer, tags=USERS, summary="Get a user", operation_id="users_get"
    )
    def get(self, request: Request, user_id: str) -> Response:
        user = selectors.group_get(workspace=self.workspace, group_id=user_id, legacy=True)
        return Response(user_wire(user))

    @api_schema(
        response=UserDeletedSerializer,
        tags=USERS,
        summary="Soft-delete a user (its keys stop working)",
        operation_id="users_delete",
    )
    def delete(self, request: Request, user_id: str) -> Response:
        user = services.user_delete(workspace=self.workspace, user_id=user_id, actor=self.actor)
        return Response(user_deleted_wire(user))
