"""Support staff's view of keys: list, search, mint (plaintext shown once), revoke.

Every write goes through keys.services so validation and the audit trail match the API's.
"""

from __future__ import annotations

from typing import Any, ClassVar

from django import forms
from django.contrib import admin
from django.db.models import QuerySet
from django.forms import ModelForm
from django.http import HttpRequest, HttpResponse
from django.template.response import TemplateResponse
from django.utils.cache import add_never_cache_headers

from gateway_project.kernel.errors import ValidationFailed
from groups.models import Group
from groups.services.audit import staff_actor
from keys.models import ApiKey, ManagementKey
from keys.services import (
    api_key_create,
    api_key_revoke,
    expires_at_check,
    management_key_create,
    management_key_revoke,
)

MINTED_TEMPLATE = "admin/keys/key_minted.html"


def _actor(request: HttpRequest) -> str:
    return staff_actor(request.user.get_username())


class MintedKeyAdmin(admin.ModelAdmin):  # type: ignore[type-arg]
    """Shared shape: an add form that mints, a read-only detail page, revoke instead of delete."""

    mint_fields: tuple[str, ...] = ()
    detail_fields: tuple[str, ...] = ()
    actions = ["revoke_selected"]
    list_filter: ClassVar[tuple[Any, ...]] = (
        ("revoked_at", admin.EmptyFieldListFilter),
        "workspace",
    )
    date_hierarchy = "created_at"

    def mint(self, request: HttpRequest, data: dict[str, Any]) -> tuple[Any, str]:
        raise NotImplementedError

    def revoke(self, request: HttpRequest, key: Any) -> None:
        raise NotImplementedError

    def get_fields(self, request: HttpRequest, obj: Any = None) -> tuple[str, ...]:
        return self.mint_fields if obj is None else self.detail_fields

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> tuple[str, ...]:
        return () if obj is None else self.detail_fields

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def save_model(self, request: HttpRequest, obj: Any, form: ModelForm, change: bool) -> None:  # type: ignore[type-arg]
        if change:
            return
        key, plaintext = self.mint(request, form.cleaned_data)
        obj.pk, obj.prefix, obj.workspace_id = key.pk, key.prefix, key.workspace_id
        obj._state.adding = False
        obj.minted_plaintext = plaintext

    def response_add(
        self, request: HttpRequest, obj: Any, post_url_continue: str | None = None
    ) -> HttpResponse:
        """Render the plaintext in the POST's own response: it is never stored or shown again."""
        context = {
            **self.admin_site.each_context(request),
            "opts": self.opts,
            "title": f"New {self.opts.verbose_name} minted",
            "key": obj,
            "plaintext": obj.minted_plaintext,
        }
        response = TemplateResponse(request, MINTED_TEMPLATE, context)
        add_never_cache_headers(response)
        return response

    @admin.action(description="Revoke selected keys", permissions=["change"])
    def revoke_selected(self, request: HttpRequest, queryset: QuerySet[Any]) -> None:
        live = list(queryset.filter(revoked_at__isnull=True).select_related("workspace"))
        for key in live:
            self.revoke(request, key)
        self.message_user(request, f"Revoked {len(live)} key(s).")


class ApiKeyMintForm(ModelForm):  # type: ignore[type-arg]
    """The mint form: an expiry, if given, must be in the future (the service's rule)."""

    def clean_expires_at(self) -> Any:
        value = self.cleaned_data.get("expires_at")
        try:
            return expires_at_check(value)
        except ValidationFailed as exc:
            raise forms.ValidationError(exc.message, code=exc.code) from exc


@admin.register(ApiKey)
class ApiKeyAdmin(MintedKeyAdmin):
    form = ApiKeyMintForm
    list_display = (
        "prefix",
        "name",
        "group",
        "workspace",
        "registered",
        "expires_at",
        "created_at",
        "last_used_at",
        "revoked_at",
    )
    list_select_related = ("group", "workspace")
    search_fields = ("^prefix", "=group__external_entity_id", "=group__id", "name")
    list_filter = (*MintedKeyAdmin.list_filter, "registered")
    mint_fields = ("group", "name", "expires_at")
    detail_fields = (
        "id",
        "prefix",
        "name",
        "workspace",
        "group",
        "slugs",
        "registered",
        "expires_at",
        "created_at",
        "last_used_at",
        "revoked_at",
    )

    def formfield_for_foreignkey(self, db_field: Any, request: HttpRequest, **kwargs: Any) -> Any:
        if db_field.name == "group":
            kwargs["queryset"] = Group.objects.filter(deleted_at__isnull=True).select_related(
                "workspace"
            )
        return super().formfield_for_foreignkey(db_field, request, **kwargs)

    def mint(self, request: HttpRequest, data: dict[str, Any]) -> tuple[ApiKey, str]:
        group = data["group"]
        return api_key_create(
            workspace=group.workspace,
            group=group,
            actor=_actor(request),
            name=data["name"],
            expires_at=data.get("expires_at"),
        )

    def revoke(self, request: HttpRequest, key: ApiKey) -> None:
        api_key_revoke(workspace=key.workspace, prefix=key.prefix, actor=_actor(request))


@admin.register(ManagementKey)
class ManagementKeyAdmin(MintedKeyAdmin):
    list_display = (
        "prefix",
        "name",
        "scope",
        "workspace",
        "created_at",
        "last_used_at",
        "revoked_at",
    )
    list_select_related = ("workspace",)
    search_fields = ("^prefix", "=workspace__id", "workspace__name", "name")
    list_filter = (*MintedKeyAdmin.list_filter, "scope")
    mint_fields = ("workspace", "name", "scope")
    detail_fields = (
        "id",
        "prefix",
        "name",
        "scope",
        "workspace",
        "created_at",
        "last_used_at",
        "revoked_at",
    )

    def mint(self, request: HttpRequest, data: dict[str, Any]) -> tuple[ManagementKey, str]:
        return management_key_create(
            workspace=data["workspace"],
            actor=_actor(request),
            scope=data["scope"],
            name=data["name"],
        )

    def revoke(self, request: HttpRequest, key: ManagementKey) -> None:
        management_key_revoke(workspace=key.workspace, prefix=key.prefix, actor=_actor(request))
