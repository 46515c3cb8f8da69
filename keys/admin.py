"""Support staff's view of keys: list, search, mint (plaintext shown once), rotate a leaked key,
revoke (after a confirmation page).

Every write goes through keys.services so validation and the audit trail match the API's. Every
write answers with a redirect, so reloading a result page never repeats it; a new key's plaintext
travels to the page that shows it through gateway_project.kernel.shown_once.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any, ClassVar

from django import forms
from django.contrib import admin, messages
from django.contrib.admin.utils import unquote
from django.core.exceptions import PermissionDenied
from django.db.models import Q, QuerySet
from django.forms import ModelForm
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import get_object_or_404
from django.template.response import TemplateResponse
from django.urls import URLPattern, path, reverse
from django.utils import timezone
from django.utils.cache import add_never_cache_headers

from gateway_project.kernel.admin_pages import ReadOnlyPageMixin
from gateway_project.kernel.admin_paging import WholeTermSearchMixin
from gateway_project.kernel.confirmation import action_confirmation, action_confirmed
from gateway_project.kernel.errors import GatewayError, ValidationFailed
from gateway_project.kernel.shown_once import shown_once_put, shown_once_take
from groups.models import Group
from groups.services.audit import staff_actor
from keys.models import ApiKey, ManagementKey
from keys.services import (
    api_key_create,
    api_key_revoke,
    api_key_rotate,
    expires_at_check,
    management_key_create,
    management_key_revoke,
    management_key_rotate,
)

MINTED_TEMPLATE = "admin/keys/key_minted.html"
ROTATE_TEMPLATE = "admin/keys/key_rotate.html"
REVOKE_TEMPLATE = "admin/keys/key_revoke.html"


def _actor(request: HttpRequest) -> str:
    return staff_actor(request.user.get_username())


class RotateForm(forms.Form):
    WHEN = (("now", "Now: the leaked key stops working at once"), ("at", "At a chosen time"))
    revoke = forms.ChoiceField(choices=WHEN, widget=forms.RadioSelect, initial="now")
    revoke_at = forms.DateTimeField(
        required=False,
        label="Revoke at (UTC)",
        help_text="e.g. 2026-12-03 18:00:00 UTC: time for its users to switch to the replacement.",
    )

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        if data.get("revoke") == "at":
            at = data.get("revoke_at")
            if at is None:
                self.add_error("revoke_at", "Give the time to revoke the old key at.")
            elif at <= timezone.now():
                self.add_error("revoke_at", "Pick a time in the future, or revoke now.")
        return data

    def when(self) -> datetime | None:
        """The scheduled revoke time, or None to revoke now."""
        return self.cleaned_data["revoke_at"] if self.cleaned_data["revoke"] == "at" else None


class MintedKeyAdmin(WholeTermSearchMixin, ReadOnlyPageMixin, admin.ModelAdmin):  # type: ignore[type-arg]
    """Shared shape: an add form that mints, a read-only detail page with rotate and revoke
    buttons, revoke instead of delete. The services take (workspace, prefix, actor) alike."""

    mint_fields: tuple[str, ...] = ()
    detail_fields: tuple[str, ...] = ()
    actions = ["revoke_selected"]
    list_filter: ClassVar[tuple[Any, ...]] = (
        ("revoked_at", admin.EmptyFieldListFilter),
        "workspace",
    )
    change_form_template = "admin/keys/key_change_form.html"
    revoke_service: Callable[..., Any]
    rotate_service: Callable[..., tuple[Any, str]]

    def mint(self, request: HttpRequest, data: dict[str, Any]) -> tuple[Any, str]:
        raise NotImplementedError

    def revoke(self, request: HttpRequest, key: Any) -> None:
        self.revoke_service(workspace=key.workspace, prefix=key.prefix, actor=_actor(request))

    def rotate(self, request: HttpRequest, key: Any, revoke_at: datetime | None) -> tuple[Any, str]:
        return self.rotate_service(
            workspace=key.workspace, prefix=key.prefix, actor=_actor(request), revoke_at=revoke_at
        )

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
        return self._show_once(request, obj, obj.minted_plaintext, title="minted")

    def _show_once(
        self, request: HttpRequest, key: Any, plaintext: str, *, title: str, old: Any = None
    ) -> HttpResponse:
        """Redirect to the page that shows the plaintext once (a reload cannot mint again)."""
        payload = {"pk": key.pk, "plaintext": plaintext, "title": title}
        if old is not None:
            payload["old"] = old.pk
        token = shown_once_put(user_id=request.user.pk, payload=payload)
        url = reverse(f"admin:{self.opts.app_label}_{self.opts.model_name}_minted", args=[token])
        return HttpResponseRedirect(url, status=303)

    def get_urls(self) -> list[URLPattern]:
        name = f"{self.opts.app_label}_{self.opts.model_name}"
        view = self.admin_site.admin_view
        return [
            path("minted/<str:token>/", view(self.minted_view), name=f"{name}_minted"),
            path("<path:object_id>/rotate/", view(self.rotate_view), name=f"{name}_rotate"),
            path("<path:object_id>/revoke/", view(self.revoke_view), name=f"{name}_revoke"),
            *super().get_urls(),
        ]

    def minted_view(self, request: HttpRequest, token: str) -> HttpResponse:
        """The new key's plaintext, shown once: a reload says it was already shown."""
        if not (self.has_add_permission(request) or self.has_change_permission(request)):
            raise PermissionDenied
        shown = shown_once_take(user_id=request.user.pk, token=token)
        key = old = None
        if shown is not None:
            key = self.model.objects.filter(pk=shown["pk"]).first()
            old = self.model.objects.filter(pk=shown.get("old")).first()
        context = {
            **self.admin_site.each_context(request),
            "opts": self.opts,
            "title": f"New {self.opts.verbose_name} {shown['title'] if shown else 'minted'}",
            "key": key,
            "old": old,
            "plaintext": shown["plaintext"] if shown else None,
        }
        response = TemplateResponse(request, MINTED_TEMPLATE, context)
        add_never_cache_headers(response)
        return response

    def _live_key(self, request: HttpRequest, object_id: str) -> Any:
        if not self.has_change_permission(request):
            raise PermissionDenied
        return get_object_or_404(self.get_queryset(request), pk=unquote(object_id))

    def _change_url(self, key: Any) -> str:
        return reverse(f"admin:{self.opts.app_label}_{self.opts.model_name}_change", args=[key.pk])

    def rotate_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        """Ask how to retire the leaked key, then mint its replacement and show it once."""
        key = self._live_key(request, object_id)
        form = RotateForm(request.POST or None)
        if key.revoked_at is None and request.method == "POST" and form.is_valid():
            try:
                new, plaintext = self.rotate(request, key, form.when())
            except GatewayError as exc:
                self.message_user(request, exc.message, messages.ERROR)
                return HttpResponseRedirect(self._change_url(key), status=303)
            return self._show_once(request, new, plaintext, title="(rotation)", old=key)
        return self._key_page(request, key, ROTATE_TEMPLATE, "Rotate a leaked key", form=form)

    def revoke_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        """Confirm, then revoke the key; back to its page either way."""
        key = self._live_key(request, object_id)
        if key.revoked_at is None and action_confirmed(request):
            self.revoke(request, key)
            self.message_user(request, f"Revoked {key.prefix}: it no longer authenticates.")
            return HttpResponseRedirect(self._change_url(key), status=303)
        return self._key_page(request, key, REVOKE_TEMPLATE, "Revoke a key")

    def _key_page(
        self, request: HttpRequest, key: Any, template: str, title: str, **extra: Any
    ) -> HttpResponse:
        context = {
            **self.admin_site.each_context(request),
            "opts": self.opts,
            "title": title,
            "key": key,
            **extra,
        }
        return TemplateResponse(request, template, context)

    @admin.action(description="Revoke selected keys…", permissions=["change"])
    def revoke_selected(self, request: HttpRequest, queryset: QuerySet[Any]) -> HttpResponse | None:
        live = queryset.filter(revoked_at__isnull=True).select_related("workspace")
        if not action_confirmed(request):
            return action_confirmation(
                self,
                request,
                live,
                title="Revoke keys",
                consequence="These keys stop authenticating at once, on every gateway node. "
                "A revoke cannot be undone.",
                button="Yes, revoke them",
            )
        keys = list(live)
        for key in keys:
            self.revoke(request, key)
        self.message_user(request, f"Revoked {len(keys)} key(s).")
        return None


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
    # Each an indexed lookup (keys/migrations/0005_admin_search_indexes.py); a group id or an
    # external id is first resolved to its groups, so the keys are found by their group index.
    search_fields = ("prefix__startswith", "name__istartswith")
    search_help_text = "The start of a key prefix, a group id, an external id or a key name."
    list_filter = (*MintedKeyAdmin.list_filter, "registered")
    autocomplete_fields = ("group",)
    revoke_service = staticmethod(api_key_revoke)
    rotate_service = staticmethod(api_key_rotate)
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
        "revoke_at",
        "revoked_at",
    )

    def formfield_for_foreignkey(self, db_field: Any, request: HttpRequest, **kwargs: Any) -> Any:
        if db_field.name == "group":
            kwargs["queryset"] = Group.objects.filter(deleted_at__isnull=True).select_related(
                "workspace"
            )
        return super().formfield_for_foreignkey(db_field, request, **kwargs)

    def search_q(self, term: str) -> Q:
        named = Group.objects.filter(Q(pk=term) | Q(external_entity_id=term))
        return super().search_q(term) | Q(group_id__in=list(named.values_list("pk", flat=True)))

    def mint(self, request: HttpRequest, data: dict[str, Any]) -> tuple[ApiKey, str]:
        group = data["group"]
        return api_key_create(
            workspace=group.workspace,
            group=group,
            actor=_actor(request),
            name=data["name"],
            expires_at=data.get("expires_at"),
        )


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
    # Management keys are a few per workspace: names are searched anywhere in them.
    search_fields = (
        "prefix__startswith",
        "workspace__id__exact",
        "workspace__name__icontains",
        "name__icontains",
    )
    list_filter = (*MintedKeyAdmin.list_filter, "scope")
    autocomplete_fields = ("workspace",)
    revoke_service = staticmethod(management_key_revoke)
    rotate_service = staticmethod(management_key_rotate)
    mint_fields = ("workspace", "name", "scope")
    detail_fields = (
        "id",
        "prefix",
        "name",
        "scope",
        "workspace",
        "created_at",
        "last_used_at",
        "revoke_at",
        "revoked_at",
    )

    def mint(self, request: HttpRequest, data: dict[str, Any]) -> tuple[ManagementKey, str]:
        return management_key_create(
            workspace=data["workspace"],
            actor=_actor(request),
            scope=data["scope"],
            name=data["name"],
        )
