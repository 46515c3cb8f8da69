"""Admin building blocks: forms that write through services, so staff hit the API's rules."""

from __future__ import annotations

import json
from typing import Any, cast

from django import forms
from django.contrib import admin
from django.forms.utils import ErrorDict
from django.http import HttpRequest
from django.urls import reverse
from django.utils.html import format_html
from django.utils.safestring import SafeString

from gateway_project.kernel.admin_paging import LargeListMixin
from gateway_project.kernel.errors import GatewayError
from groups.services.audit import SYSTEM_ACTOR, staff_actor


def actor_of(request: HttpRequest) -> str:
    """The audit actor of the staff user behind a request."""
    return staff_actor(request.user.get_username())


def change_link(obj: Any) -> SafeString | str:
    """A link to the admin change page of `obj`."""
    if obj is None:
        return "-"
    url = reverse(f"admin:{obj._meta.app_label}_{obj._meta.model_name}_change", args=[obj.pk])
    return format_html('<a href="{}">{}</a>', url, obj)


class PrettyJSONField(forms.JSONField):
    """A JSON textarea that shows its value indented."""

    def prepare_value(self, value: Any) -> Any:
        if isinstance(value, forms.fields.InvalidJSONInput):
            return value
        return json.dumps(value, indent=2, ensure_ascii=False)


class ServiceForm(forms.ModelForm):  # type: ignore[type-arg]
    """A ModelForm whose `clean()` writes through a service; service errors become form errors."""

    actor = SYSTEM_ACTOR  # replaced per request by ServiceAdmin.get_form
    _errors: ErrorDict | None  # BaseForm's; the stubs leave it undeclared
    param_fields: dict[str, str] = {}  # service error `param` prefix -> form field

    def service_save(self, data: dict[str, Any]) -> Any:
        raise NotImplementedError

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        if self._errors:
            return data
        try:
            self.instance = self.service_save(data)
        except GatewayError as exc:
            self.add_error(
                self._error_field(exc), forms.ValidationError(exc.message, code=exc.code)
            )
        return data

    def _error_field(self, exc: GatewayError) -> str | None:
        param = exc.param or ""
        for prefix, field in self.param_fields.items():
            if param.startswith(prefix) and field in self.fields:
                return field
        return None

    def _post_clean(self) -> None:
        """Nothing: the service validated and wrote the row in clean()."""


class ServiceAdmin(LargeListMixin, admin.ModelAdmin):  # type: ignore[type-arg]
    """Hands the staff actor to the form; the form's clean() already saved. Its lists do not
    count every row."""

    def get_form(
        self, request: HttpRequest, obj: Any = None, change: bool = False, **kwargs: Any
    ) -> Any:
        form = cast("type[ServiceForm]", super().get_form(request, obj, change=change, **kwargs))
        form.actor = actor_of(request)
        return form

    def save_model(self, request: HttpRequest, obj: Any, form: Any, change: bool) -> None:
        """Nothing: ServiceForm.clean() wrote through the service."""


class NoChangeMixin:
    """Rows created through a service and otherwise read-only (delete goes through one too)."""

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False
