"""Management API for endpoints and a group's usage counters."""

from __future__ import annotations

from rest_framework.request import Request
from rest_framework.response import Response

from gateway_project.kernel.apikit import (
    GatewayAPIView,
    api_schema,
    body_object,
    list_schema,
    patch_validate,
)
from groups import selectors as group_selectors
from routing import selectors, services
from routing.serializers import (
    EndpointCreateSerializer,
    EndpointDeletedSerializer,
    EndpointUpdateSerializer,
    EndpointV1Serializer,
    GroupUsageSerializer,
    endpoint_deleted_wire,
    endpoint_wire,
)
from routing.usage_read import group_usage_read

ENDPOINTS = ["endpoints"]


class EndpointListView(GatewayAPIView):
    @list_schema(
        EndpointV1Serializer,
        tags=ENDPOINTS,
        summary="List endpoints",
        operation_id="endpoints_list",
    )
    def get(self, request: Request) -> Response:
        endpoints = selectors.endpoint_list(workspace=self.workspace)
        return self.page(endpoints, lambda rows: [endpoint_wire(e) for e in rows])

    @api_schema(
        request=EndpointCreateSerializer,
        response=EndpointV1Serializer,
        tags=ENDPOINTS,
        summary="Create an endpoint",
        operation_id="endpoints_create",
    )
    def post(self, request: Request) -> Response:
        data = self.input(EndpointCreateSerializer)
        endpoint = services.endpoint_create(workspace=self.workspace, actor=self.actor, **data)
        return Response(endpoint_wire(endpoint))


class EndpointDetailView(GatewayAPIView):
    @api_schema(
        response=EndpointV1Serializer,
        tags=ENDPOINTS,
        summary="Get an endpoint",
        operation_id="endpoints_get",
    )
    def get(self, request: Request, endpoint_id: str) -> Response:
        endpoint = selectors.endpoint_get(workspace=self.workspace, endpoint_id=endpoint_id)
        return Response(endpoint_wire(endpoint))

    @api_schema(
        request=EndpointUpdateSerializer,
        response=EndpointV1Serializer,
        tags=ENDPOINTS,
        summary="Rename an endpoint or replace its targets",
        operation_id="endpoints_update",
    )
    def patch(self, request: Request, endpoint_id: str) -> Response:
        selectors.endpoint_get(workspace=self.workspace, endpoint_id=endpoint_id)
        data = patch_validate(EndpointUpdateSerializer, body_object(request), immutable=("region",))
        endpoint = services.endpoint_update(
            workspace=self.workspace, endpoint_id=endpoint_id, actor=self.actor, **data
        )
        return Response(endpoint_wire(endpoint))

    @api_schema(
        response=EndpointDeletedSerializer,
        tags=ENDPOINTS,
        summary="Delete an endpoint (its slug stops routing)",
        operation_id="endpoints_delete",
    )
    def delete(self, request: Request, endpoint_id: str) -> Response:
        endpoint = services.endpoint_delete(
            workspace=self.workspace, endpoint_id=endpoint_id, actor=self.actor
        )
        return Response(endpoint_deleted_wire(endpoint))


class GroupUsageView(GatewayAPIView):
    @api_schema(
        response=GroupUsageSerializer,
        tags=["groups"],
        summary="Current usage against the group's daily and monthly limits",
        operation_id="groups_usage",
        errors={503: "The usage counters are unreachable."},
    )
    def get(self, request: Request, group_id: str) -> Response:
        group = group_selectors.group_get(workspace=self.workspace, group_id=group_id, legacy=False)
        enforced = group_selectors.group_enforced_limits(group=group)
        usage = group_usage_read(group=group, enforced=enforced)
        return Response(
            GroupUsageSerializer({"customer_id": group.external_entity_id, "usage": usage}).data
        )
