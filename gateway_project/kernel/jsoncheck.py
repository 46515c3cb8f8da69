"""Strict JSON input: only values PostgreSQL's jsonb and our columns can store, within bounds.

Shared by the management API's bodies and the inference path's `X-Request-Metadata` header, so a
value one of them accepts is never refused later by the database (a usage event that cannot be
stored is a request that is never billed).
"""

from __future__ import annotations

import json
import math
import re
from typing import Any, NoReturn

INT64_MAX = 2**63 - 1
MAX_DEPTH = 32
_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")


class JsonRejected(ValueError):
    """Input that is not strict JSON; `code` and `path` say which rule and where."""

    def __init__(self, message: str, *, code: str, path: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.code = code
        self.path = path


def _constant_refuse(name: str) -> NoReturn:
    raise JsonRejected(f"{name} is not a JSON number.", code="invalid_json")


def json_strict_loads(text: str) -> Any:
    """Parse `text` (NaN and Infinity literals refused) and check it with `json_values_check`."""
    try:
        value = json.loads(text, parse_constant=_constant_refuse)
    except JsonRejected:
        raise
    except (ValueError, RecursionError):
        raise JsonRejected("The value is not valid JSON.", code="invalid_json") from None
    json_values_check(value)
    return value


def json_values_check(value: Any, path: str = "", *, max_depth: int = MAX_DEPTH) -> None:
    """Refuse NUL, unpaired surrogates, non-finite numbers, integers beyond 64 bits and nesting
    deeper than `max_depth`. Iterative, so a deeply nested value is a refusal, never a
    RecursionError."""
    pending: list[tuple[Any, str, int]] = [(value, path, 0)]
    while pending:
        item, where, depth = pending.pop()
        if isinstance(item, (dict, list)):
            if depth >= max_depth:
                raise JsonRejected(
                    f"JSON may nest at most {max_depth} levels.", code="invalid_json", path=where
                )
            pending.extend(_children(item, where, depth + 1))
        else:
            _scalar_check(item, where)


def _children(
    item: dict[str, Any] | list[Any], where: str, depth: int
) -> list[tuple[Any, str, int]]:
    if isinstance(item, list):
        return [(child, f"{where}[{index}]", depth) for index, child in enumerate(item)]
    out: list[tuple[Any, str, int]] = []
    for key, child in item.items():
        out.append((key, where, depth))
        out.append((child, f"{where}.{key}" if where else str(key), depth))
    return out


def _scalar_check(item: Any, where: str) -> None:
    if isinstance(item, str):
        if _UNSTORABLE.search(item):
            raise JsonRejected(
                "Strings may not contain NUL or unpaired surrogate characters.",
                code="invalid_characters",
                path=where,
            )
    elif isinstance(item, float) and not math.isfinite(item):
        raise JsonRejected("Numbers must be finite.", code="number_out_of_range", path=where)
    elif isinstance(item, int) and not isinstance(item, bool) and abs(item) > INT64_MAX:
        raise JsonRejected("Integers must fit in 64 bits.", code="number_out_of_range", path=where)
