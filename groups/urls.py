"""Routes of groups and legacy users under /v1/gateway/."""

from __future__ import annotations

from django.urls import path

from groups import views

urlpatterns = [
    path("groups", views.GroupListView.as_view(), name="groups"),
    path("groups:batch", views.GroupBatchView.as_view(), name="groups-batch"),
    path("groups/<gwid:group_id>", views.GroupDetailView.as_view(), name="group"),
    path("users", views.UserListView.as_view(), name="users"),
    path("users/<gwid:user_id>", views.UserDetailView.as_view(), name="user"),
]
