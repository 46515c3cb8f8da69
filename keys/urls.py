"""Routes of federated keys under /v1/gateway/."""

from __future__ import annotations

from django.urls import path

from keys import views

urlpatterns = [
    path("api_keys:batch", views.KeyBatchView.as_view(), name="keys-batch"),
    path("groups/<gwid:owner_id>/api_keys", views.GroupKeyListView.as_view(), name="group-keys"),
    path(
        "groups/<gwid:owner_id>/api_keys/register",
        views.GroupKeyRegisterView.as_view(),
        name="group-keys-register",
    ),
    path(
        "groups/<gwid:owner_id>/api_keys/<keyprefix:prefix>",
        views.GroupKeyDetailView.as_view(),
        name="group-key",
    ),
    path("users/<gwid:owner_id>/api_keys", views.UserKeyListView.as_view(), name="user-keys"),
    path(
        "users/<gwid:owner_id>/api_keys/<keyprefix:prefix>",
        views.UserKeyDetailView.as_view(),
        name="user-key",
    ),
]
