"""Cursor pagination: `limit` 1..1000 (default 100), an opaque cursor, creation order.

Ids are `<kind>_<ULID>` and sort by creation time, so a cursor is simply the last id seen (base64
encoded so clients do not depend on it): rows added later sort after it, and rows before it never
shift, which keeps a walk free of duplicates and gaps while the table grows.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, TypeVar

from django.db.models import Model, QuerySet
from rest_framework.request import Request

from gateway_project.kernel.errors import ValidationFailed

DEFAULT_LIMIT = 100
MAX_LIMIT = 1000
# Items in one batch call (`POST /v1/gateway/groups:batch`...), counted before any is checked.
BATCH_MAX = 1000
ID_RE = re.compile(r"^[a-z]{1,16}_[0-9A-Z]{26}$")
M = TypeVar("M", bound=Model)


@dataclass(frozen=True)
class Page:
    """One page of rows and whether more follow."""

    items: list[Any]
    has_more: bool
    cursor: str | None


def cursor_encode(last_id: str) -> str:
    """The opaque cursor that resumes after `last_id`."""
    return base64.urlsafe_b64encode(last_id.encode()).decode().rstrip("=")


def cursor_decode(cursor: str) -> str:
    """The id a cursor resumes after; 400 `invalid_cursor` for anything we did not issue."""
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        last_id = base64.urlsafe_b64decode(padded.encode("ascii")).decode("ascii")
    except (binascii.Error, UnicodeError, ValueError):
        last_id = ""
    if not ID_RE.match(last_id):
        raise ValidationFailed("The cursor is not valid.", code="invalid_cursor", param="cursor")
    return last_id


def limit_parse(raw: str | None) -> int:
    """`limit` as an int in 1..1000; 400 `invalid_limit` otherwise."""
    if raw is None:
        return DEFAULT_LIMIT
    if not raw.isascii() or not raw.isdigit() or not 1 <= int(raw) <= MAX_LIMIT:
        raise ValidationFailed(
            f"limit must be an integer between 1 and {MAX_LIMIT}.",
            code="invalid_limit",
            param="limit",
        )
    return int(raw)


def paginate(*, queryset: QuerySet[M], request: Request) -> Page:
    """The page of `queryset` selected by the request's `limit` and `cursor` (one query)."""
    return page_read(rows=lambda after, count: rows_after(queryset, after, count), request=request)


def rows_after(queryset: QuerySet[M], after: str | None, count: int) -> QuerySet[M]:
    """The first `count` rows of `queryset` in id order, after the id `after` when given."""
    if after is not None:
        queryset = queryset.filter(pk__gt=after)
    return queryset.order_by("pk")[:count]


def page_read(*, rows: Callable[[str | None, int], Iterable[M]], request: Request) -> Page:
    """The page selected by the request's `limit` and `cursor`, read by `rows(after, count)`: the
    first `count` rows in id order after the id `after` (None: from the start)."""
    limit = limit_parse(request.query_params.get("limit"))
    cursor = request.query_params.get("cursor")
    found = list(rows(cursor_decode(cursor) if cursor else None, limit + 1))
    has_more = len(found) > limit
    found = found[:limit]
    return Page(
        items=found, has_more=has_more, cursor=cursor_encode(found[-1].pk) if has_more else None
    )


def page_body(*, page: Page, items: list[Any]) -> dict[str, Any]:
    """The list body `{"items": [...], "pagination": {"has_more", "cursor"}}`."""
    return {"items": items, "pagination": {"has_more": page.has_more, "cursor": page.cursor}}
