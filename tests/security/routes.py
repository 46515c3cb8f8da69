"""Every management route, enumerated from the URL resolver, so a new route is covered by itself."""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from django.urls import URLPattern, URLResolver, get_resolver

from gateway_project.kernel.apikit import GatewayAPIView

API_PREFIX = "v1/gateway/"
# Routes under /v1/gateway/ that are not GatewayAPIView operations, on purpose: public documents.
PUBLIC_DOCUMENTS = {"v1/gateway/openapi.json", "v1/gateway/docs"}
METHODS = ("get", "post", "put", "patch", "delete")
_PARAM = re.compile(r"<(?:(?P<converter>\w+):)?(?P<name>\w+)>")


@dataclass(frozen=True)
class Route:
    """One (method, path template) of the management API and the view serving it."""

    method: str
    template: str  # e.g. "/v1/gateway/groups/<gwid:owner_id>/api_keys/<keyprefix:prefix>"
    name: str | None
    view: type

    @property
    def params(self) -> list[str]:
        """Path parameter names, in order."""
        return [m["name"] for m in _PARAM.finditer(self.template)]

    def path(self, values: dict[str, str]) -> str:
        """The concrete path with each parameter taken from `values`."""
        missing = [name for name in self.params if name not in values]
        assert not missing, f"{self}: no test object for path parameter(s) {missing}"
        return _PARAM.sub(lambda m: values[m["name"]], self.template)

    def __str__(self) -> str:
        return f"{self.method.upper()} {self.template}"


def _walk(patterns: Iterable[Any], prefix: str) -> Iterable[tuple[str, URLPattern]]:
    for pattern in patterns:
        if isinstance(pattern, URLResolver):
            yield from _walk(pattern.url_patterns, prefix + str(pattern.pattern))
        else:
            yield prefix + str(pattern.pattern), pattern


def _view_class(pattern: URLPattern) -> type | None:
    callback = pattern.callback
    return getattr(callback, "cls", None) or getattr(callback, "view_class", None)


def api_views() -> list[tuple[str, URLPattern, type | None]]:
    """(template, pattern, view class) of every resolver entry under /v1/gateway/ (not regexes)."""
    return [
        (template, pattern, _view_class(pattern))
        for template, pattern in _walk(get_resolver().url_patterns, "")
        if template.startswith(API_PREFIX)
    ]


def management_routes() -> list[Route]:
    """Every (method, path) served by a GatewayAPIView, in resolver order."""
    routes = []
    for template, pattern, view in api_views():
        if view is None or not issubclass(view, GatewayAPIView):
            continue
        for method in METHODS:
            if callable(getattr(view, method, None)):
                routes.append(Route(method, "/" + template, pattern.name, view))
    return routes


ROUTES = management_routes()
SCOPED = [route for route in ROUTES if route.params]
COLLECTION_READS = [route for route in ROUTES if not route.params and route.method == "get"]
