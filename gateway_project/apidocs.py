"""The management API's edges: envelope 404/500 handlers and the reference page (wired in urls)."""

from __future__ import annotations

from typing import Any

from django.http import HttpRequest, HttpResponse
from django.views import defaults
from django.views.decorators.csrf import csrf_exempt
from drf_spectacular.views import SpectacularRedocView

from gateway_project.kernel.errors import json_error_response


@csrf_exempt
def gateway_not_found(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
    """Any unknown /v1/gateway/ path: the envelope 404."""
    return json_error_response(
        status=404, message="Unknown route.", type="not_found_error", code="not_found"
    )


def handler404(request: HttpRequest, exception: Exception | None = None) -> HttpResponse:
    """The envelope under /v1/, Django's page elsewhere."""
    if request.path.startswith("/v1/"):
        return gateway_not_found(request)
    return defaults.page_not_found(request, exception)


def handler500(request: HttpRequest) -> HttpResponse:
    """The envelope under /v1/, Django's page elsewhere."""
    if request.path.startswith("/v1/"):
        return json_error_response(
            status=500, message="Internal server error.", type="api_error", code="internal_error"
        )
    return defaults.server_error(request)


def schema_inputs_closed(result: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
    """Request bodies reject unknown fields, so their schemas say `additionalProperties: false`."""
    for name, component in result.get("components", {}).get("schemas", {}).items():
        if name.endswith("Request") and component.get("type") == "object":
            component["additionalProperties"] = False
    return result


class ReferencePageView(SpectacularRedocView):
    """Redoc over /v1/gateway/openapi.json; its JS is vendored (sidecar), no CDN, no web fonts."""

    template_name = "api/redoc.html"
