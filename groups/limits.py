"""Limit specs, pure: parse the wire shape, compare ceilings, compute effective and enforced limits.

Nothing here touches the database; selectors load a chain of `GroupLimits` and services validate
`ModelSpec`s with these functions, so the API, the admin and the proxy cache share one rule set.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from gateway_project.kernel.errors import ValidationFailed

RATE = "RATE"
USAGE = "USAGE"
INDEPENDENT = "INDEPENDENT"
CASCADING = "CASCADING"
LIMIT_TYPES = ("TOKEN", "REQUEST")
SPEND = "SPEND"
TYPES_BY_KIND = {RATE: LIMIT_TYPES, USAGE: (*LIMIT_TYPES, SPEND)}
UNITS_BY_KIND = {RATE: ("SECOND", "MINUTE"), USAGE: ("DAY", "MONTH")}
# Lua numbers are doubles: SPEND counters (micro-units) stay exact integers below 2**53.
SPEND_MAX_THRESHOLD = 2**53 - 1
WIRE_KEY_BY_KIND = {RATE: "rate_limits", USAGE: "usage_limits"}
MODEL_KEYS = frozenset({"slug", "rate_limits", "usage_limits"})
LIMIT_KEYS = frozenset({"type", "unit", "threshold"})
_ORDER = {
    name: index
    for index, name in enumerate((*LIMIT_TYPES, SPEND, "SECOND", "MINUTE", "DAY", "MONTH"))
}

LimitKey = tuple[str, str, str]


@dataclass(frozen=True)
class LimitSpec:
    """One configured limit: kind RATE|USAGE, type TOKEN|REQUEST|SPEND (USAGE), unit, threshold."""

    kind: str
    type: str
    unit: str
    threshold: int

    @property
    def key(self) -> LimitKey:
        return (self.kind, self.type, self.unit)

    def wire(self) -> dict[str, Any]:
        return {"type": self.type, "unit": self.unit, "threshold": self.threshold}


@dataclass(frozen=True)
class ModelSpec:
    """A group's access to one slug with its limits, in wire order."""

    slug: str
    limits: tuple[LimitSpec, ...]


@dataclass(frozen=True)
class GroupLimits:
    """One group's configured models, keyed by slug in configured order."""

    group_id: str
    models: dict[str, tuple[LimitSpec, ...]]


@dataclass(frozen=True)
class EnforcedLimit:
    """A counter a request must fit: charged to `counter_group_id`, hash-tagged by the root."""

    counter_group_id: str
    root_group_id: str
    kind: str
    type: str
    unit: str
    threshold: int


@dataclass(frozen=True)
class EffectiveLimit:
    """A limit as the runtime enforces it, with the group it is anchored to."""

    spec: LimitSpec
    source_group: str


def models_parse(raw: Any, *, param: str = "models") -> list[ModelSpec]:
    """Validate the wire `models` list (shape, set semantics, limit rules) into specs."""
    if not isinstance(raw, list):
        raise ValidationFailed(f"{param} must be a list", code="invalid_type", param=param)
    specs: list[ModelSpec] = []
    seen: set[str] = set()
    for index, item in enumerate(raw):
        spec = _model_parse(item, param=f"{param}[{index}]")
        if spec.slug in seen:
            raise ValidationFailed(
                f"{spec.slug} is listed twice",
                code="duplicate_slug",
                param=f"{param}[{index}].slug",
            )
        seen.add(spec.slug)
        specs.append(spec)
    return specs


def _model_parse(raw: Any, *, param: str) -> ModelSpec:
    if not isinstance(raw, dict):
        raise ValidationFailed(f"{param} must be an object", code="invalid_type", param=param)
    _keys_check(raw, allowed=MODEL_KEYS, param=param)
    slug = raw.get("slug")
    if not isinstance(slug, str) or not slug:
        raise ValidationFailed(
            f"{param}.slug must be a non-empty string", code="invalid_slug", param=f"{param}.slug"
        )
    limits = [
        *_limits_parse(raw.get("rate_limits"), kind=RATE, param=f"{param}.rate_limits"),
        *_limits_parse(raw.get("usage_limits"), kind=USAGE, param=f"{param}.usage_limits"),
    ]
    return ModelSpec(slug=slug, limits=tuple(limits))


def _limits_parse(raw: Any, *, kind: str, param: str) -> list[LimitSpec]:
    if raw is None:
        return []
    if not isinstance(raw, list):
        raise ValidationFailed(f"{param} must be a list", code="invalid_type", param=param)
    limits: list[LimitSpec] = []
    for index, item in enumerate(raw):
        limit = _limit_parse(item, kind=kind, param=f"{param}[{index}]")
        # Rate limits: one per type; usage limits: one per (type, unit), e.g. a day and a month.
        if any(_same_slot(other, limit) for other in limits):
            per = "" if kind == RATE else f" {limit.unit}"
            raise ValidationFailed(
                f"{param}: at most one {limit.type}{per} limit per slug",
                code="duplicate_limit",
                param=f"{param}[{index}]",
            )
        limits.append(limit)
    return limits


def _same_slot(one: LimitSpec, other: LimitSpec) -> bool:
    return one.type == other.type and (one.kind == RATE or one.unit == other.unit)


def _limit_parse(raw: Any, *, kind: str, param: str) -> LimitSpec:
    if not isinstance(raw, dict):
        raise ValidationFailed(f"{param} must be an object", code="invalid_type", param=param)
    _keys_check(raw, allowed=LIMIT_KEYS, param=param)
    type_, unit, threshold = raw.get("type"), raw.get("unit"), raw.get("threshold")
    types = TYPES_BY_KIND[kind]
    if type_ not in types:
        raise ValidationFailed(
            f"{param}.type must be {' or '.join(types) if len(types) == 2 else ', '.join(types)}",
            code="invalid_limit_type",
            param=f"{param}.type",
        )
    units = UNITS_BY_KIND[kind]
    if unit not in units:
        raise ValidationFailed(
            f"{param}.unit must be one of {', '.join(units)}",
            code="invalid_limit_unit",
            param=f"{param}.unit",
        )
    if isinstance(threshold, bool) or not isinstance(threshold, int) or threshold < 0:
        raise ValidationFailed(
            f"{param}.threshold must be an integer >= 0",
            code="invalid_threshold",
            param=f"{param}.threshold",
        )
    if type_ == SPEND and threshold > SPEND_MAX_THRESHOLD:
        raise ValidationFailed(
            f"{param}.threshold of a SPEND limit must be at most {SPEND_MAX_THRESHOLD} micro-units",
            code="invalid_threshold",
            param=f"{param}.threshold",
        )
    return LimitSpec(kind=kind, type=type_, unit=unit, threshold=threshold)


def _keys_check(raw: dict[str, Any], *, allowed: frozenset[str], param: str) -> None:
    unknown = sorted(set(raw) - allowed)
    if unknown:
        raise ValidationFailed(
            f"{param}: unknown field {unknown[0]!r}",
            code="unknown_field",
            param=f"{param}.{unknown[0]}",
        )


def specs_wire(models: dict[str, tuple[LimitSpec, ...]]) -> list[dict[str, Any]]:
    """The configured models in the wire shape, in configured order."""
    return [
        {
            "slug": slug,
            **{
                wire_key: [limit.wire() for limit in limits if limit.kind == kind]
                for kind, wire_key in WIRE_KEY_BY_KIND.items()
            },
        }
        for slug, limits in models.items()
    ]


def limit_param(specs: Sequence[ModelSpec], *, slug: str, limit: LimitSpec, param: str) -> str:
    """The wire path of one limit inside `specs`, e.g. models[0].rate_limits[1].threshold."""
    for index, spec in enumerate(specs):
        if spec.slug == slug:
            same_kind = [item for item in spec.limits if item.kind == limit.kind]
            position = same_kind.index(limit)
            return f"{param}[{index}].{WIRE_KEY_BY_KIND[limit.kind]}[{position}].threshold"
    return param


def ceiling_violation(
    *, lower: GroupLimits, upper: GroupLimits
) -> tuple[str, LimitSpec, LimitSpec] | None:
    """The first (slug, lower limit, upper limit) where the descendant exceeds the ancestor."""
    for slug, limits in lower.models.items():
        upper_by_key = {limit.key: limit for limit in upper.models.get(slug, ())}
        for limit in limits:
            ceiling = upper_by_key.get(limit.key)
            if ceiling is not None and limit.threshold > ceiling.threshold:
                return slug, limit, ceiling
    return None


def effective_limits(*, chain: Sequence[GroupLimits], mode: str) -> dict[str, list[EffectiveLimit]]:
    """Per slug of the group (last in `chain`, root first), the limits the runtime enforces."""
    group = chain[-1]
    nearest_first = list(reversed(chain))
    result: dict[str, list[EffectiveLimit]] = {}
    for slug in group.models:
        chosen: dict[LimitKey, EffectiveLimit] = {}
        for owner in nearest_first:
            for limit in owner.models.get(slug, ()):
                current = chosen.get(limit.key)
                if current is None or (
                    mode == CASCADING and limit.threshold < current.spec.threshold
                ):
                    chosen[limit.key] = EffectiveLimit(spec=limit, source_group=owner.group_id)
        result[slug] = sorted(chosen.values(), key=lambda item: _sort_key(item.spec))
    return result


def _sort_key(limit: LimitSpec) -> tuple[int, int, int]:
    return (0 if limit.kind == RATE else 1, _ORDER[limit.type], _ORDER[limit.unit])


def effective_wire(effective: dict[str, list[EffectiveLimit]]) -> list[dict[str, Any]]:
    """Effective limits in the wire shape, every limit carrying its `source_group`."""
    return [
        {
            "slug": slug,
            **{
                wire_key: [
                    {**item.spec.wire(), "source_group": item.source_group}
                    for item in items
                    if item.spec.kind == kind
                ]
                for kind, wire_key in WIRE_KEY_BY_KIND.items()
            },
        }
        for slug, items in effective.items()
    ]


def enforced_limits(
    *, chain: Sequence[GroupLimits], mode: str, root_group_id: str
) -> dict[str, list[EnforcedLimit]]:
    """Per slug, every counter a request must fit (on both modes)."""
    group = chain[-1]
    if mode == CASCADING:
        return {
            slug: [
                _enforced(limit, counter=owner.group_id, root=root_group_id)
                for owner in chain
                for limit in sorted(owner.models.get(slug, ()), key=_sort_key)
            ]
            for slug in group.models
        }
    effective = effective_limits(chain=chain, mode=mode)
    return {
        slug: [_enforced(item.spec, counter=group.group_id, root=root_group_id) for item in items]
        for slug, items in effective.items()
    }


def _enforced(limit: LimitSpec, *, counter: str, root: str) -> EnforcedLimit:
    return EnforcedLimit(
        counter_group_id=counter,
        root_group_id=root,
        kind=limit.kind,
        type=limit.type,
        unit=limit.unit,
        threshold=limit.threshold,
    )
