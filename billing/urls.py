"""Routes of billing under /v1/gateway/."""

from __future__ import annotations

from django.urls import path

from billing import views

urlpatterns = [
    path("events", views.EventListView.as_view(), name="events"),
]
