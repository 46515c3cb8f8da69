"""Support's customer page, its reads: find a customer by what a support ticket quotes, then the
group, its keys and their use, usage against every effective limit, rejections, billing, audit.

A pasted full key is only hashed and split here: it is never logged, stored or shown back.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from django.db.models import F

from billing.selectors import (
    EventDeliveries,
    UsageTotals,
    events_billing_state,
    events_recent,
    usage_totals,
)
from groups.models import Group
from groups.selectors import EnforcedLimit, audit_of_customer, group_chain, group_enforced_limits
from keys.models import ApiKey
from keys.selectors import key_hash, key_well_formed
from routing.activity_read import (
    RecentRejection,
    RejectedLimit,
    group_rejections,
    group_rejections_recent,
    keys_last_used_pending,
)
from routing.limit_counters import (
    GCRA_EPOCH_US,
    PERIOD_US,
    UNAVAILABLE,
    LimitsUnavailable,
    counter_key,
    sync_client,
)
from routing.usage_read import group_usage_read

MAX_TERM_LENGTH = 256
MAX_MATCHES = 50
TYPE_UNITS = {"TOKEN": "tokens", "REQUEST": "requests"}
NO_USAGE = UsageTotals(0, 0, 0, 0, 0, 0, None)
UNIT_WINDOWS = {
    "SECOND": "per second",
    "MINUTE": "per minute",
    "DAY": "today (UTC)",
    "MONTH": "this month (UTC)",
}


@dataclass(frozen=True)
class Match:
    """A group a search term names, and how (`key` when a key's prefix or the key itself)."""

    group: Group
    via: str
    key_prefix: str = ""


def term_is_key(term: str) -> bool:
    """Whether a pasted term is (or looks like) a whole key: it must never be echoed."""
    return "." in term and key_well_formed(term)


def key_term_prefix(term: str) -> str | None:
    """The prefix of the key a pasted whole key is, found by its hash (revoked keys too)."""
    if not term_is_key(term):
        return None
    found = ApiKey.objects.filter(key_hash=key_hash(term)).values_list("prefix", flat=True)
    return found.first()


def customers_find(*, term: str) -> list[Match]:
    """Groups named by a group id, an external id or a key prefix (live groups first)."""
    term = term.strip()[:MAX_TERM_LENGTH]
    if not term:
        return []
    groups = Group.objects.select_related("workspace")
    matches = [Match(g, "group id") for g in groups.filter(pk=term)]
    matches += [
        Match(g, "external id")
        for g in groups.filter(external_entity_id=term).order_by(
            F("deleted_at").asc(nulls_first=True), "created_at"
        )[:MAX_MATCHES]
    ]
    keys = ApiKey.objects.select_related("group__workspace").filter(prefix=term)
    matches += [Match(key.group, "key", key.prefix) for key in keys]
    return matches


@dataclass(frozen=True)
class LimitBar:
    """One effective limit and how much of it is used now."""

    slug: str
    type: str
    unit: str
    threshold: int
    used: int | None
    reset_at: str | None

    @property
    def percent(self) -> int:
        """Filled share of the bar, 0-100 (a threshold of 0 is full)."""
        if self.used is None:
            return 0
        if self.threshold <= 0:
            return 100
        return min(100, math.floor(self.used * 100 / self.threshold))

    @property
    def resets_at(self) -> datetime | None:
        """When a usage counter starts again from zero."""
        if not self.reset_at:
            return None
        return datetime.fromisoformat(self.reset_at.replace("Z", "+00:00"))

    @property
    def measure(self) -> str:
        """What is counted: requests, tokens, ..."""
        return TYPE_UNITS.get(self.type, self.type.lower())

    @property
    def window(self) -> str:
        """The limit's window in words."""
        return UNIT_WINDOWS.get(self.unit, f"per {self.unit.lower()}")

    @property
    def rate(self) -> bool:
        """A rate limit (its bar is what is in use now, refilling continuously)."""
        return PERIOD_US.get(self.unit, 0) > 0


def limit_bars(*, group: Group) -> list[LimitBar]:
    """Every effective limit of the group with its current use; LimitsUnavailable if Redis is.

    Usage limits come from the usage API's read (so a new unit appears here with it); rate
    limits from their GCRA state: the share of the burst capacity in use now."""
    if group.deleted_at is not None:
        return []
    enforced = group_enforced_limits(group=group)
    usage = group_usage_read(group=group, enforced=enforced)
    rate = _rate_usage(enforced)
    bars = []
    for slug, limits in enforced.items():
        read = {(row["type"], row["unit"]): row for row in usage.get(slug, [])}
        shown: set[tuple[str, str]] = set()
        for limit in limits:
            if (limit.type, limit.unit) in shown:
                continue  # CASCADING: the chain's tightest counter of this kind is shown
            shown.add((limit.type, limit.unit))
            bars.append(_bar(slug=slug, limit=limit, read=read, rate=rate))
    return bars


def _bar(
    *,
    slug: str,
    limit: EnforcedLimit,
    read: dict[tuple[str, str], dict[str, Any]],
    rate: dict[tuple[str, str, str], tuple[int, int]],
) -> LimitBar:
    row = read.get((limit.type, limit.unit))
    if row is not None:
        return LimitBar(
            slug, limit.type, limit.unit, row["threshold"], row["current_usage"], row["reset_at"]
        )
    used, threshold = rate.get((slug, limit.type, limit.unit), (None, int(limit.threshold)))
    return LimitBar(slug, limit.type, limit.unit, threshold, used, None)


def _rate_usage(enforced: dict[str, list[EnforcedLimit]]) -> dict[tuple[str, str, str], Any]:
    """(slug, type, unit) -> (units in use now, threshold) of the tightest GCRA counter."""
    pairs = [
        (slug, limit)
        for slug, limits in enforced.items()
        for limit in limits
        if PERIOD_US.get(limit.unit, 0) > 0
    ]
    if not pairs:
        return {}
    try:
        client = sync_client()
        seconds, micros = client.time()
        values = client.mget([counter_key(limit=lim, slug=slug) for slug, lim in pairs])
    except UNAVAILABLE as exc:
        raise LimitsUnavailable("Limit counters are temporarily unavailable.") from exc
    rel = seconds * 1_000_000 + micros - GCRA_EPOCH_US
    found: dict[tuple[str, str, str], tuple[int, int]] = {}
    for (slug, limit), value in zip(pairs, values, strict=True):
        period, threshold = PERIOD_US[limit.unit], int(limit.threshold)
        ahead = max(0.0, float(value) - rel) if value is not None else 0.0
        used = min(threshold, math.ceil(ahead * threshold / period)) if threshold else 0
        key = (slug, limit.type, limit.unit)
        best = found.get(key)
        if best is None or threshold - used < best[1] - best[0]:
            found[key] = (used, threshold)
    return found


@dataclass(frozen=True)
class KeyRow:
    """A key of the customer with its last use and usage."""

    key: ApiKey
    last_used_at: datetime | None
    usage: UsageTotals


@dataclass(frozen=True)
class Customer:
    """Everything the customer page shows."""

    group: Group
    chain: list[Group]
    keys: list[KeyRow]
    bars: list[LimitBar]
    bars_error: str
    slugs: dict[str, UsageTotals]
    rejected: list[RejectedLimit]
    rejections: list[RecentRejection]
    events: list[EventDeliveries]
    billing_today: dict[str, int]
    billing_month: dict[str, int]
    audit: list[Any]


def customer_get(*, group_id: str) -> Group | None:
    """The group of a customer page (deleted ones too: support looks at past customers)."""
    return Group.objects.select_related("workspace", "parent").filter(pk=group_id).first()


def customer_overview(*, group: Group, now: datetime) -> Customer:
    """The customer page's content for `group` at `now`."""
    keys = list(
        ApiKey.objects.filter(group=group).order_by(
            F("revoked_at").desc(nulls_first=True), "-created_at", "id"
        )
    )
    try:
        bars, bars_error = limit_bars(group=group), ""
    except LimitsUnavailable as exc:
        bars, bars_error = [], exc.message
    day = now.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    return Customer(
        group=group,
        chain=group_chain(group=group),
        keys=_key_rows(group=group, keys=keys, now=now),
        bars=bars,
        bars_error=bars_error,
        slugs=usage_totals(group_id=group.id, by="model_slug", now=now),
        rejected=group_rejections(group_id=group.id, now=now),
        rejections=group_rejections_recent(group_id=group.id),
        events=events_recent(group_id=group.id),
        billing_today=events_billing_state(group_id=group.id, since=day),
        billing_month=events_billing_state(group_id=group.id, since=day.replace(day=1)),
        audit=audit_of_customer(group_ids=[group.id], key_ids=[key.id for key in keys]),
    )


def _key_rows(*, group: Group, keys: list[ApiKey], now: datetime) -> list[KeyRow]:
    usage = usage_totals(group_id=group.id, by="api_key_prefix", now=now)
    pending = keys_last_used_pending(prefixes=[key.prefix for key in keys])
    rows = []
    for key in keys:
        seen = [at for at in (key.last_used_at, pending.get(key.prefix)) if at is not None]
        rows.append(KeyRow(key, max(seen) if seen else None, usage.get(key.prefix, NO_USAGE)))
    return rows
