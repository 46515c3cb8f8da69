"""Support staff's view of endpoints; writes go through routing.services (same rules, same audit).

The inline formset validates the whole endpoint by running the service inside a savepoint that is
rolled back, so a ValidationFailed shows as a form error; save_related then runs it for real.
"""

from __future__ import annotations

from typing import Any

from django import forms
from django.conf import settings
from django.contrib import admin
from django.contrib.admin.utils import construct_change_message
from django.contrib.admin.widgets import RelatedFieldWidgetWrapper
from django.db import models, transaction
from django.db.models import QuerySet
from django.forms.models import BaseInlineFormSet
from django.http import HttpRequest
from django_redis import get_redis_connection

from gateway_project.kernel.admin_pages import LiveFilter
from gateway_project.kernel.admin_paging import WholeTermSearchMixin
from gateway_project.kernel.errors import GatewayError
from groups.services.audit import SYSTEM_ACTOR, staff_actor
from routing.circuit_state import circuit_describe
from routing.models import Endpoint, Target
from routing.services import endpoint_create, endpoint_delete, endpoint_update
from routing.targets import target_circuit

TARGET_FIELDS = (
    "provider",
    "model_id",
    "environment_name",
    "base_url",
    "target_model",
    "secret",
    "weight",
)


def _optional(field: Any, name: str) -> Any:
    """Fields with a default (strategy, weight) may be left out of a form: the default holds."""
    if field is not None and name in ("strategy", "weight"):
        field.required = False
    return field


class _DryRun(Exception):
    """Rolls back the validation run of a service call."""


def endpoint_write(
    *, endpoint: Endpoint, targets: list[dict[str, Any]] | None, actor: str
) -> Endpoint:
    """Create or update `endpoint` (an admin form's instance) through the services."""
    routing = {"strategy": endpoint.strategy, "first_byte_timeout": endpoint.first_byte_timeout}
    if endpoint._state.adding:
        return endpoint_create(
            workspace=endpoint.workspace,
            actor=actor,
            slug=endpoint.slug,
            targets=targets or [],
            region=endpoint.region,
            routing=routing,
            pricing=endpoint.pricing,
        )
    return endpoint_update(
        workspace=endpoint.workspace,
        endpoint_id=endpoint.pk,
        actor=actor,
        slug=endpoint.slug,
        targets=targets,
        routing=routing,
        pricing=endpoint.pricing,
    )


def _target_dict(data: dict[str, Any]) -> dict[str, Any]:
    target: dict[str, Any] = {}
    for name in TARGET_FIELDS:
        value = data.get(name)
        if name == "secret":
            if value is not None:
                target["secret_id"] = value.pk
        elif value not in (None, ""):
            target[name] = value
    return target


class TargetFormSet(BaseInlineFormSet):  # type: ignore[type-arg]
    """Targets in form order (top = tried first), checked together with the endpoint."""

    def targets(self) -> list[dict[str, Any]]:
        """The kept forms as service target dicts."""
        kept = []
        for form in self.forms:
            data = getattr(form, "cleaned_data", None) or {}
            if not data or data.get("DELETE"):
                continue
            if form in self.extra_forms and not form.has_changed():
                continue
            kept.append(_target_dict(data))
        return kept

    def clean(self) -> None:
        super().clean()
        endpoint = self.instance
        if (
            any(form.errors for form in self.forms)
            or not endpoint.workspace_id
            or not endpoint.slug
        ):
            return
        try:
            with transaction.atomic():
                endpoint_write(endpoint=endpoint, targets=self.targets(), actor=SYSTEM_ACTOR)
                raise _DryRun
        except _DryRun:
            pass
        except GatewayError as exc:
            where = f"{exc.param}: " if exc.param else ""
            raise forms.ValidationError(f"{where}{exc.message}", code=exc.code) from exc


# Sizes that keep a target's row, delete box included, inside a 1400 px window.
TARGET_WIDGET_SIZES = {
    "model_id": 10,
    "environment_name": 8,
    "base_url": 22,
    "target_model": 16,
    "weight": 5,
}


class TargetInline(admin.TabularInline):  # type: ignore[type-arg]
    model = Target
    formset = TargetFormSet
    fields = TARGET_FIELDS
    autocomplete_fields = ("secret",)
    formfield_overrides = {models.URLField: {"assume_scheme": "https"}}

    def formfield_for_dbfield(self, db_field: Any, request: HttpRequest, **kwargs: Any) -> Any:
        field = _optional(super().formfield_for_dbfield(db_field, request, **kwargs), db_field.name)
        size = TARGET_WIDGET_SIZES.get(db_field.name)
        if field is not None and size is not None:
            field.widget.attrs.update(size=size, style=f"width: {size}ch")
        if field is not None and isinstance(field.widget, RelatedFieldWidgetWrapper):
            # Secrets are added on their own page; the row keeps only the link to view one.
            field.widget.can_add_related = field.widget.can_change_related = False
        return field

    ordering = ("position",)
    extra = 1
    min_num = 0

    def get_max_num(self, request: HttpRequest, obj: Any = None, **kwargs: Any) -> int:
        return int(settings.GATEWAY_MAX_TARGETS)

    def _endpoint_perm(self, request: HttpRequest, obj: Any) -> bool:
        if obj is not None and obj.deleted_at is not None:
            return False
        return request.user.has_perm(
            "routing.add_endpoint" if obj is None else "routing.change_endpoint"
        )

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return self._endpoint_perm(request, obj)

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return self._endpoint_perm(request, obj)

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return self._endpoint_perm(request, obj)

    def has_view_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return request.user.has_perm("routing.view_endpoint") or self._endpoint_perm(request, obj)


@admin.register(Endpoint)
class EndpointAdmin(WholeTermSearchMixin, admin.ModelAdmin):  # type: ignore[type-arg]
    list_display = ("slug", "id", "workspace", "region", "created_at", "updated_at", "deleted_at")
    list_select_related = ("workspace",)
    list_filter = (LiveFilter, "region", "workspace")
    search_fields = ("slug__startswith", "id__exact")
    search_help_text = "The start of a slug (org prefix first), or an endpoint id."
    autocomplete_fields = ("workspace",)
    inlines = (TargetInline,)

    def formfield_for_dbfield(self, db_field: Any, request: HttpRequest, **kwargs: Any) -> Any:
        return _optional(super().formfield_for_dbfield(db_field, request, **kwargs), db_field.name)

    def get_fields(self, request: HttpRequest, obj: Any = None) -> tuple[str, ...]:
        routing = ("strategy", "first_byte_timeout")
        if obj is None:
            return ("workspace", "slug", "region", *routing, "pricing")
        return (
            "id",
            "workspace",
            "slug",
            "region",
            *routing,
            "pricing",
            "circuit_breakers",
            "created_at",
            "updated_at",
            "deleted_at",
        )

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> tuple[str, ...]:
        if obj is None:
            return ()
        readonly = (
            "id",
            "workspace",
            "region",
            "circuit_breakers",
            "created_at",
            "updated_at",
            "deleted_at",
        )
        if obj.deleted_at is None:
            return readonly
        return (*readonly, "slug", "strategy", "first_byte_timeout")

    @admin.display(description="circuit breakers")
    def circuit_breakers(self, obj: Endpoint) -> str:
        """Each target's breaker as the gateway's nodes share it."""
        targets = sorted(obj.targets.all(), key=lambda t: t.position)
        names = [target_circuit(t) for t in targets]
        states = circuit_describe(get_redis_connection("default"), names=names)
        return "; ".join(
            f"#{t.position} {t.provider}: {state}" for t, state in zip(targets, states, strict=True)
        )

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        live = obj is None or obj.deleted_at is None
        return live and super().has_change_permission(request, obj)

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        live = obj is None or obj.deleted_at is None
        return live and super().has_delete_permission(request, obj)

    def save_model(self, request: HttpRequest, obj: Any, form: Any, change: bool) -> None:
        """Nothing here: the endpoint and its targets are written together in save_related."""

    def save_related(self, request: HttpRequest, form: Any, formsets: Any, change: bool) -> None:
        targets = formsets[0].targets() if formsets else None
        endpoint = endpoint_write(
            endpoint=form.instance, targets=targets, actor=staff_actor(request.user.get_username())
        )
        form.instance.pk = endpoint.pk
        form.instance._state.adding = False

    def construct_change_message(
        self, request: HttpRequest, form: Any, formsets: Any, add: bool = False
    ) -> list[dict[str, Any]]:
        return construct_change_message(form, [], add)

    def delete_model(self, request: HttpRequest, obj: Endpoint) -> None:
        endpoint_delete(
            workspace=obj.workspace,
            endpoint_id=obj.pk,
            actor=staff_actor(request.user.get_username()),
        )

    def delete_queryset(self, request: HttpRequest, queryset: QuerySet[Endpoint]) -> None:
        for endpoint in queryset.filter(deleted_at__isnull=True).select_related("workspace"):
            self.delete_model(request, endpoint)
