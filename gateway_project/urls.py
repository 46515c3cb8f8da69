"""URL routes: admin, health, management API. Inference routes are dispatched in asgi.py."""

from __future__ import annotations

from django.conf import settings
from django.contrib import admin
from django.urls import include, path, re_path
from django.views.static import serve
from drf_spectacular.views import SpectacularJSONAPIView

from gateway_project import apidocs, health
from routing.customer_admin import customer_urls

urlpatterns = [
    # Support's customer page (before the admin's catch-all).
    path("admin/customers/", include(customer_urls())),
    path("admin/", admin.site.urls),
    path("healthz", health.healthz),
    path("readyz", health.readyz),
    # The management API; unknown /v1/gateway/ paths get the envelope 404.
    path("v1/gateway/", include("routing.urls")),
    path("v1/gateway/", include("groups.urls")),
    path("v1/gateway/", include("keys.urls")),
    path("v1/gateway/", include("billing.urls")),
    path("v1/gateway/openapi.json", SpectacularJSONAPIView.as_view(), name="schema"),
    path("v1/gateway/docs", apidocs.ReferencePageView.as_view(url_name="schema"), name="api-docs"),
]

handler404 = "gateway_project.apidocs.handler404"
handler500 = "gateway_project.apidocs.handler500"

if settings.GATEWAY_SERVE_STATIC:
    # The admin's static files, collected into STATIC_ROOT; behind a CDN or proxy, turn this off.
    urlpatterns.append(
        re_path(r"^static/(?P<path>.*)$", serve, {"document_root": settings.STATIC_ROOT})
    )

# Keep last: any other /v1/gateway/ path is the envelope 404 (routes added above still match first).
urlpatterns.append(re_path(r"^v1/gateway(/.*)?$", apidocs.gateway_not_found))
