"""Admin page shapes shared by the apps: read-only pages that offer no Save button, and the
live/deleted filter of soft-deleted models."""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse

HIDDEN_BUTTONS = ("show_save", "show_save_and_continue", "show_save_and_add_another")


class ReadOnlyPageMixin:
    """For a ModelAdmin whose change page may have nothing to edit (every field read-only, no
    editable inline): that page shows no Save buttons, only its actions and links."""

    def render_change_form(
        self, request: HttpRequest, context: dict[str, Any], *args: Any, **kwargs: Any
    ) -> HttpResponse:
        if not kwargs.get("add", args[0] if args else False) and _nothing_to_edit(context):
            context.update(dict.fromkeys(HIDDEN_BUTTONS, False))
        response: HttpResponse = super().render_change_form(request, context, *args, **kwargs)  # type: ignore[misc]
        return response


def _nothing_to_edit(context: dict[str, Any]) -> bool:
    form = context.get("adminform")
    if form is not None and form.form.fields:
        return False
    for inline in context.get("inline_admin_formsets", ()):
        if inline.has_add_permission or inline.has_change_permission:
            return False
    return True


class LiveFilter(admin.SimpleListFilter):
    """Live or soft-deleted rows (`deleted_at` set), for models that are deleted softly."""

    title = "state"
    parameter_name = "state"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [("live", "Live"), ("deleted", "Deleted")]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any]:
        if self.value() == "live":
            return queryset.filter(deleted_at__isnull=True)
        if self.value() == "deleted":
            return queryset.filter(deleted_at__isnull=False)
        return queryset
