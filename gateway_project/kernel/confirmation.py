"""A confirmation page in front of every admin action that destroys or revokes something: the
action runs only when the page's own form posts back `confirm=yes`."""

from __future__ import annotations

from typing import Any

from django.contrib.admin import helpers
from django.db.models import QuerySet
from django.http import HttpRequest
from django.template.response import TemplateResponse

CONFIRM_TEMPLATE = "admin/action_confirmation.html"


def action_confirmed(request: HttpRequest) -> bool:
    """Whether this post is the confirmation page's "Yes"."""
    return request.method == "POST" and request.POST.get("confirm") == "yes"


def action_confirmation(
    model_admin: Any,
    request: HttpRequest,
    queryset: QuerySet[Any],
    *,
    title: str,
    consequence: str,
    button: str,
    extra_fields: Any = None,
) -> TemplateResponse:
    """The page that asks before `request`'s action runs on `queryset`."""
    context = {
        **model_admin.admin_site.each_context(request),
        "opts": model_admin.model._meta,
        "title": title,
        "consequence": consequence,
        "button": button,
        "objects": list(queryset[:200]),
        "count": queryset.count(),
        "action": request.POST.get("action", ""),
        "selected": request.POST.getlist(helpers.ACTION_CHECKBOX_NAME),
        "action_checkbox_name": helpers.ACTION_CHECKBOX_NAME,
        "extra_fields": extra_fields,
    }
    return TemplateResponse(request, CONFIRM_TEMPLATE, context)
