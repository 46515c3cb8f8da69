"""GET /v1/gateway/events: the pull API of usage events."""

from __future__ import annotations

from django.utils import timezone
from rest_framework.request import Request
from rest_framework.response import Response

from billing import selectors
from billing.serializers import (
    UsageEventSerializer,
    events_cursor_encode,
    events_query_parse,
    events_schema_parameters,
)
from billing.wire import event_row_wire
from gateway_project.kernel.apikit import (
    LIST_PARAMETERS,
    GatewayAPIView,
    api_schema,
    page_serializer,
)
from gateway_project.kernel.pagination import Page, limit_parse, page_body


class EventListView(GatewayAPIView):
    @api_schema(
        response=page_serializer(UsageEventSerializer),
        tags=["usage events"],
        summary="List usage events in a time window",
        operation_id="events_list",
        parameters=[*LIST_PARAMETERS, *events_schema_parameters()],
    )
    def get(self, request: Request) -> Response:
        limit = limit_parse(request.query_params.get("limit"))
        window = events_query_parse(request.query_params, now=timezone.now())
        events, has_more = selectors.events_page(
            workspace=self.workspace, window=window, limit=limit
        )
        cursor = events_cursor_encode(window=window, last=events[-1]) if has_more else None
        page = Page(items=events, has_more=has_more, cursor=cursor)
        return Response(page_body(page=page, items=[event_row_wire(row) for row in events]))
