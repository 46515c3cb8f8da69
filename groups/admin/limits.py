"""A group's models and limits edited as typed rows: one row per limit (slug, type, period,
threshold), or a slug alone for access without limits.

The choices come from groups.limits at call time, so a limit type or unit added there shows up
here. A save replaces the whole set through group_update (same checks and audit as the API); an
error the service finds in one limit is shown on that row's field.
"""

from __future__ import annotations

import re
from typing import Any

from django import forms
from django.forms import BaseFormSet, formset_factory

from gateway_project.kernel.errors import GatewayError
from groups.limit_serializers import MAX_THRESHOLD
from groups.limits import LIMIT_TYPES, UNITS_BY_KIND, WIRE_KEY_BY_KIND

# models[0].rate_limits[1].threshold -> (0, "rate_limits", 1, "threshold")
PARAM = re.compile(r"models\[(\d+)\](?:\.(\w+)(?:\[(\d+)\])?)?(?:\.(\w+))?")
FIELD_OF_PARAM = {"type": "type", "unit": "period", "threshold": "threshold", "slug": "slug"}


def period_choices() -> list[tuple[str, str]]:
    """`KIND:UNIT` for every unit of every kind, e.g. ("RATE:MINUTE", "per minute (rate)")."""
    return [
        (f"{kind}:{unit}", f"per {unit.lower()} ({kind.lower()})")
        for kind, units in UNITS_BY_KIND.items()
        for unit in units
    ]


class LimitRowForm(forms.Form):
    """One limit of one slug; type, period and threshold all empty = access without limits."""

    slug = forms.CharField(max_length=201, widget=forms.TextInput(attrs={"size": 28}))
    type = forms.ChoiceField(required=False)
    period = forms.ChoiceField(required=False)
    threshold = forms.IntegerField(
        required=False,
        min_value=0,
        max_value=MAX_THRESHOLD,
        widget=forms.NumberInput(attrs={"style": "width: 12em"}),
    )

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        type_field, period_field = self.fields["type"], self.fields["period"]
        assert isinstance(type_field, forms.ChoiceField)
        assert isinstance(period_field, forms.ChoiceField)
        type_field.choices = [("", "no limit"), *[(t, t) for t in LIMIT_TYPES]]
        period_field.choices = [("", "-"), *period_choices()]

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        given = [
            name for name in ("type", "period", "threshold") if data.get(name) not in ("", None)
        ]
        if given and len(given) < 3:
            for name in {"type", "period", "threshold"} - set(given):
                if name not in self.errors:
                    self.add_error(name, "Set the type, the period and the threshold together.")
        return data

    def limit(self) -> tuple[str, dict[str, Any]] | None:
        """(wire key, limit) of this row, or None for a slug without limits."""
        data = self.cleaned_data
        if not data.get("type"):
            return None
        kind, unit = data["period"].split(":", 1)
        return WIRE_KEY_BY_KIND[kind], {
            "type": data["type"],
            "unit": unit,
            "threshold": data["threshold"],
        }


class LimitRowFormSet(BaseFormSet):  # type: ignore[type-arg]
    """The rows as the service's `models` list, and service errors put back on their row."""

    def models(self) -> list[dict[str, Any]]:
        """The wire `models` list, slugs in first-seen order (noting the row of each limit)."""
        by_slug: dict[str, dict[str, Any]] = {}
        self.origin: dict[tuple[int, str, int], int] = {}
        self.slug_rows: dict[int, int] = {}
        for index, form in enumerate(self.forms):
            data = getattr(form, "cleaned_data", None)
            if not data or data.get("DELETE") or not data.get("slug"):
                continue
            model = by_slug.setdefault(
                data["slug"],
                {"slug": data["slug"], **{key: [] for key in WIRE_KEY_BY_KIND.values()}},
            )
            self.slug_rows.setdefault(list(by_slug).index(data["slug"]), index)
            limit = form.limit()
            if limit is not None:
                key, wire = limit
                position = (list(by_slug).index(data["slug"]), key, len(model[key]))
                self.origin[position] = index
                model[key].append(wire)
        return list(by_slug.values())

    def service_error(self, exc: GatewayError) -> None:
        """Show a service error on the row and field its `param` names, else above the rows."""
        match = PARAM.fullmatch(exc.param or "")
        if match and match.group(2) == "slug" and int(match.group(1)) in self.slug_rows:
            self.forms[self.slug_rows[int(match.group(1))]].add_error("slug", exc.message)
            return
        if match and match.group(2) and match.group(3) is not None:
            key = (int(match.group(1)), match.group(2), int(match.group(3)))
            row = self.origin.get(key)
            field = FIELD_OF_PARAM.get(match.group(4) or "", "threshold")
            if row is not None:
                self.forms[row].add_error(field, exc.message)
                return
        self._non_form_errors = self.error_class([exc.message])


LimitRows = formset_factory(LimitRowForm, formset=LimitRowFormSet, extra=3, can_delete=True)


def rows_initial(models: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The group's configured `models` list as rows."""
    kind_of = {key: kind for kind, key in WIRE_KEY_BY_KIND.items()}
    rows: list[dict[str, Any]] = []
    for model in models:
        limits = [
            (kind_of[key], limit)
            for key in WIRE_KEY_BY_KIND.values()
            for limit in model.get(key, [])
        ]
        if not limits:
            rows.append({"slug": model["slug"]})
        for kind, limit in limits:
            rows.append(
                {
                    "slug": model["slug"],
                    "type": limit["type"],
                    "period": f"{kind}:{limit['unit']}",
                    "threshold": limit["threshold"],
                }
            )
    return rows
