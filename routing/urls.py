"""Routes of endpoints and group usage under /v1/gateway/."""

from __future__ import annotations

from django.urls import path

from routing import views

urlpatterns = [
    path("endpoints", views.EndpointListView.as_view(), name="endpoints"),
    path("endpoints/<gwid:endpoint_id>", views.EndpointDetailView.as_view(), name="endpoint"),
    path("groups/<gwid:group_id>/usage", views.GroupUsageView.as_view(), name="group-usage"),
]
