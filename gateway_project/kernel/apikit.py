"""The kit of /v1/gateway/* views: base view, strict JSON input, error envelope schema, paging."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from functools import cache
from typing import Any, Protocol, TypeVar, cast

from django.conf import settings
from django.core.exceptions import RequestDataTooBig
from django.db.models import QuerySet
from django.http import HttpRequest
from django.urls import register_converter
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import exceptions as drf_exceptions
from rest_framework import serializers
from rest_framework.parsers import JSONParser
from rest_framework.renderers import JSONRenderer
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from gateway_project.kernel import jsoncheck
from gateway_project.kernel.errors import GatewayError, ValidationFailed
from gateway_project.kernel.pagination import (
    BATCH_MAX,
    MAX_LIMIT,
    page_body,
    page_read,
    paginate,
)

F = TypeVar("F", bound=Callable[..., Any])
# Accept headers DRF's negotiation answers with JSON at its plain media type.
PLAIN_JSON_ACCEPTS = frozenset({"*/*", "application/json"})


class IdConverter:
    """An opaque object id in a path (`grp_01J...`); anything else is the catch-all 404."""

    regex = r"[A-Za-z0-9_-]{1,64}"

    def to_python(self, value: str) -> str:
        return value

    def to_url(self, value: str) -> str:
        return value


class KeyPrefixConverter(IdConverter):
    """The first 16 characters of a federated key (printable ASCII, no slash)."""

    regex = r"[!-.0-~]{1,64}"


register_converter(IdConverter, "gwid")
register_converter(KeyPrefixConverter, "keyprefix")


class Principal(Protocol):
    """Who a management call acts as: what the authentication wired in settings puts on `auth`."""

    @property
    def workspace(self) -> Any: ...

    @property
    def actor(self) -> str: ...


class GatewayAPIView(APIView):
    """JSON only, helpers for strict input; authentication and scopes come from settings.

    The composition root (settings.REST_FRAMEWORK) wires the management-key authentication and
    permission classes, so the apps' views depend on this kit and not on the app that owns keys.
    """

    parser_classes = [JSONParser]
    renderer_classes = [JSONRenderer]

    def perform_content_negotiation(self, request: Request, force: bool = False) -> tuple[Any, str]:
        """JSON without DRF's negotiation when the request accepts anything or JSON and names no
        format (what every client sends); any other request is negotiated as before."""
        accept = request.META.get("HTTP_ACCEPT", "*/*")
        if (
            accept in PLAIN_JSON_ACCEPTS
            and self.renderer_classes == [JSONRenderer]
            and "format" not in self.kwargs
            and "format" not in request.query_params
        ):
            return JSONRenderer(), JSONRenderer.media_type
        return super().perform_content_negotiation(request, force)

    @property
    def principal(self) -> Principal:
        return cast(Principal, self.request.auth)

    @property
    def workspace(self) -> Any:
        return self.principal.workspace

    @property
    def actor(self) -> str:
        return self.principal.actor

    def input(
        self, serializer_class: type[serializers.Serializer[Any]], **kwargs: Any
    ) -> dict[str, Any]:
        """The request body validated by `serializer_class`; unknown fields rejected everywhere."""
        return strict_validate(serializer_class, body_object(self.request), **kwargs)

    def input_many(
        self, serializer_class: type[serializers.Serializer[Any]], *, field: str
    ) -> list[dict[str, Any]]:
        """The batch body `{field: [item, ...]}`: 1..1,000 items (counted before any is looked
        at), each validated like `input` would validate it alone."""
        body = body_object(self.request)
        for name in body:
            if name != field:
                raise ValidationFailed(f"Unknown field `{name}`.", code="unknown_field", param=name)
        items = body.get(field)
        if not isinstance(items, list) or not 1 <= len(items) <= BATCH_MAX:
            raise ValidationFailed(
                f"`{field}` must be a list of 1..{BATCH_MAX} items.",
                code="invalid_batch",
                param=field,
            )
        return strict_validate_many(serializer_class, items, param=field)

    def page(
        self, queryset: QuerySet[Any], wire: Callable[[list[Any]], list[dict[str, Any]]]
    ) -> Response:
        """The list body of the page of `queryset` the request's `limit` and `cursor` select,
        its rows rendered by `wire`."""
        page = paginate(queryset=queryset, request=self.request)
        return Response(page_body(page=page, items=wire(page.items)))

    def page_read(
        self,
        rows: Callable[[str | None, int], Iterable[Any]],
        wire: Callable[[list[Any]], list[dict[str, Any]]],
    ) -> Response:
        """`page` of the rows `rows(after, count)` reads (kernel.pagination.page_read)."""
        page = page_read(rows=rows, request=self.request)
        return Response(page_body(page=page, items=wire(page.items)))

    def query(self, serializer_class: type[serializers.Serializer[Any]]) -> dict[str, Any]:
        """The declared query parameters validated by `serializer_class` (others are ignored)."""
        declared = declared_fields(serializer_class)
        params = {k: v for k, v in self.request.query_params.items() if k in declared}
        return strict_validate(serializer_class, params)


@cache
def declared_fields(serializer_class: type[serializers.Serializer[Any]]) -> frozenset[str]:
    """The names of the fields `serializer_class` declares (fixed once the class is defined)."""
    return frozenset(serializer_class().fields)


def body_bytes(request: HttpRequest) -> bytes:
    """The raw body, 413 in the envelope when it is over the upload limit (declared or streamed)."""
    length = request.META.get("CONTENT_LENGTH") or "0"
    too_large = GatewayError("The request body is too large.", code="request_too_large", status=413)
    if length.isdigit() and int(length) > settings.DATA_UPLOAD_MAX_MEMORY_SIZE:
        raise too_large
    try:
        return request.body
    except RequestDataTooBig:
        raise too_large from None


def body_object(request: Request) -> dict[str, Any]:
    """The JSON object body: 413 too large, 415 not JSON, 400 malformed or not an object."""
    if not body_bytes(request):
        return {}
    media_type = (request.content_type or "").split(";")[0].strip().lower()
    if media_type != "application/json" and not media_type.endswith("+json"):
        raise drf_exceptions.UnsupportedMediaType(media_type or "none")
    try:
        data = request.data
    except RecursionError:
        raise ValidationFailed(
            "The request body is nested too deeply.", code="invalid_json"
        ) from None
    if not isinstance(data, dict):
        raise ValidationFailed("The request body must be a JSON object.", code="invalid_body")
    json_values_check(data, "")
    return data


def json_values_check(value: Any, path: str) -> None:
    """Refuse what no column can store (kernel/jsoncheck.py) as a 400 in the envelope."""
    try:
        jsoncheck.json_values_check(value, path)
    except jsoncheck.JsonRejected as exc:
        raise ValidationFailed(exc.message, code=exc.code, param=exc.path or None) from None


def strict_validate(
    serializer_class: type[serializers.Serializer[Any]], data: dict[str, Any], **kwargs: Any
) -> dict[str, Any]:
    """Validate `data`; an unknown field at any nesting level is 400 `unknown_field`."""
    serializer = serializer_class(data=data, **kwargs)
    shape_check(serializer, data, "")
    serializer.is_valid(raise_exception=True)
    return dict(serializer.validated_data)


def strict_validate_many(
    serializer_class: type[serializers.Serializer[Any]], items: list[Any], *, param: str
) -> list[dict[str, Any]]:
    """`strict_validate` of every item of a batch (one serializer for all); errors name the item,
    `groups[3].metadata.name`."""
    serializer = serializer_class(many=True, data=items)
    for index, item in enumerate(items):
        shape_check(serializer.child, item, f"{param}[{index}]")  # type: ignore[attr-defined]
    if not serializer.is_valid():
        # DRF reports a list's failures by item index: {3: {...}}.
        failures: dict[int, Any] = {
            int(index): error for index, error in dict(serializer.errors).items() if error
        }
        index = min(failures)
        raise drf_exceptions.ValidationError({f"{param}[{index}]": failures[index]})
    return [dict(item) for item in serializer.validated_data]


def patch_validate(
    serializer_class: type[serializers.Serializer[Any]],
    data: dict[str, Any],
    *,
    immutable: tuple[str, ...] = (),
) -> dict[str, Any]:
    """A PATCH body: immutable fields (dotted paths) are 400, and it must change something."""
    for dotted in immutable:
        parent, _, leaf = dotted.rpartition(".")
        holder = data.get(parent) if parent else data
        if isinstance(holder, dict) and leaf in holder:
            raise ValidationFailed(
                f"`{dotted}` cannot change.", code="immutable_field", param=dotted
            )
    validated = strict_validate(serializer_class, data)
    if not validated:
        fields = " and/or ".join(f"`{name}`" for name in serializer_class().fields)
        raise ValidationFailed(f"Give {fields}.", code="empty_update")
    return validated


def shape_check(field: serializers.Field[Any, Any, Any, Any], data: Any, path: str) -> None:
    """Walk `data` alongside the serializer tree: reject undeclared keys and non-string strings."""
    if isinstance(field, serializers.CharField) and data is not None and not isinstance(data, str):
        raise ValidationFailed(f"`{path}` must be a string.", code="invalid_type", param=path)
    if isinstance(field, (serializers.ListSerializer, serializers.ListField)):
        if isinstance(data, list) and field.child is not None:
            for index, item in enumerate(data):
                shape_check(field.child, item, f"{path}[{index}]")
        return
    if not isinstance(field, serializers.Serializer) or not isinstance(data, dict):
        return
    fields = field.fields
    for name, value in data.items():
        param = f"{path}.{name}" if path else str(name)
        if name not in fields or fields[name].read_only:
            raise ValidationFailed(f"Unknown field `{param}`.", code="unknown_field", param=param)
        shape_check(fields[name], value, param)


def timestamp_wire(value: datetime | str | None) -> str | None:
    """RFC 3339 UTC with a `Z` and milliseconds: 2026-05-05T12:00:00.123Z (None stays None)."""
    if value is None or isinstance(value, str):
        return value
    return value.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class TimestampField(serializers.DateTimeField):
    """A timestamp in the `timestamp_wire` form."""

    # DRF renders None as None; its stubs declare `-> str`.
    def to_representation(self, value: datetime | str | None) -> str | None:  # type: ignore[override]
        return timestamp_wire(value)


class ErrorDetailSerializer(serializers.Serializer[Any]):
    message = serializers.CharField()
    type = serializers.CharField()
    code = serializers.CharField()
    param = serializers.CharField(allow_null=True)


class ErrorEnvelopeSerializer(serializers.Serializer[Any]):
    error = ErrorDetailSerializer()


ERROR_DESCRIPTIONS = {
    400: "Invalid request (the `code` says which rule).",
    401: "Missing, unknown or revoked management key.",
    403: "Workspace not onboarded, VIEW scope writing, or a federated key.",
    404: "Not found, deleted, revoked, or owned by another workspace.",
    405: "Method not allowed.",
    413: "Request body too large.",
    415: "The body is not JSON.",
}
ERROR_RESPONSES = {
    status: OpenApiResponse(ErrorEnvelopeSerializer, description=text)
    for status, text in ERROR_DESCRIPTIONS.items()
}
LIST_PARAMETERS = [
    OpenApiParameter(
        "limit", int, description=f"Page size, 1..{MAX_LIMIT} (default 100).", required=False
    ),
    OpenApiParameter("cursor", str, description="`pagination.cursor` of the previous page."),
]


def api_schema(
    *,
    response: Any,
    request: Any = None,
    tags: list[str],
    summary: str,
    errors: dict[int, str] | None = None,
    **kwargs: Any,
) -> Callable[[F], F]:
    """`extend_schema` with the 200 body and every error envelope documented."""
    extra = {
        status: OpenApiResponse(ErrorEnvelopeSerializer, description=text)
        for status, text in (errors or {}).items()
    }
    kwargs.setdefault("description", summary)
    return extend_schema(
        request=request,
        responses={200: response, **ERROR_RESPONSES, **extra},
        tags=tags,
        summary=summary,
        **kwargs,
    )


def list_schema(
    item: type[serializers.Serializer[Any]],
    *,
    tags: list[str],
    summary: str,
    operation_id: str,
    parameters: list[OpenApiParameter] | None = None,
) -> Callable[[F], F]:
    """`api_schema` of a list: a page of `item`, `limit` and `cursor` (and `parameters`)."""
    return api_schema(
        response=page_serializer(item),
        tags=tags,
        summary=summary,
        operation_id=operation_id,
        parameters=[*LIST_PARAMETERS, *(parameters or [])],
    )


def batch_of(child: serializers.Serializer[Any], *, help_text: str) -> serializers.ListField:
    """The list field of a batch body: 1..BATCH_MAX `child` items."""
    return serializers.ListField(
        child=child, min_length=1, max_length=BATCH_MAX, help_text=help_text
    )


class PaginationSerializer(serializers.Serializer[Any]):
    has_more = serializers.BooleanField()
    cursor = serializers.CharField(allow_null=True)


@cache
def page_serializer(item: type[serializers.Serializer[Any]]) -> type[serializers.Serializer[Any]]:
    """The list body schema `{"items": [item...], "pagination": {...}}` for `item`."""
    name = item.__name__.removesuffix("Serializer") + "PageSerializer"
    attrs = {"items": item(many=True), "pagination": PaginationSerializer()}
    return type(name, (serializers.Serializer,), attrs)
