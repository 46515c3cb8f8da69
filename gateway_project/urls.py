"""URL routes: admin, health, management API. Inference routes are dispatched in asgi.py."""

from __future__ import annotations

from django.contrib import admin
from django.urls import path

from gateway_project import health

urlpatterns = [
    path("admin/", admin.site.urls),
    path("healthz", health.healthz),
    path("readyz", health.readyz),
]
