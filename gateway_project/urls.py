"""URL routes: admin, health, management API. Inference routes are dispatched in asgi.py."""

from __future__ import annotations

from django.conf import settings
from django.contrib import admin
from django.urls import path, re_path
from django.views.static import serve

from gateway_project import health

urlpatterns = [
    path("admin/", admin.site.urls),
    path("healthz", health.healthz),
    path("readyz", health.readyz),
]

if settings.GATEWAY_SERVE_STATIC:
    # The admin's static files, collected into STATIC_ROOT; behind a CDN or proxy, turn this off.
    urlpatterns.append(
        re_path(r"^static/(?P<path>.*)$", serve, {"document_root": settings.STATIC_ROOT})
    )
