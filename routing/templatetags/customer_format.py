"""Filters of the customer page: UTC times with the zone and seconds, numbers with separators."""

from __future__ import annotations

from datetime import UTC, datetime

from django import template

register = template.Library()


@register.filter
def utc(value: datetime | None, empty: str = "-") -> str:
    """`2026-12-03 10:21:07 UTC`."""
    if value is None:
        return empty
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


@register.filter
def num(value: int | float | None) -> str:
    """`50,000,000`; a float keeps up to one decimal."""
    if value is None:
        return "-"
    if isinstance(value, float) and not value.is_integer():
        return f"{value:,.1f}"
    return f"{int(value):,}"
