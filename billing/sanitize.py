"""Make a usage event storable whatever its payload holds, and say what had to give way.

PostgreSQL refuses NUL characters and unpaired surrogates in text and jsonb, and NaN/Infinity in
jsonb; SQLite stores them, and then a batch that serializes them fails. Either way the tokens must
still be billed: strings are cleaned, metadata that cannot be kept is dropped, and every change is
described in the event's `ingest_note`.
"""

from __future__ import annotations

import math
import re
from typing import Any

# Any surrogate code point in a Python str is unpaired: json.loads joins valid pairs.
_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")
MAX_METADATA_DEPTH = 32
BIGINT_MAX = 2**63 - 1


class _Dropped(Exception):
    """The metadata cannot be kept as a whole."""


def text_clean(value: str) -> str:
    """`value` without NUL characters and unpaired surrogates."""
    return _UNSTORABLE.sub("", value)


def metadata_sanitize(value: Any) -> tuple[dict[str, Any], str]:
    """jsonb-safe metadata and a note of what was changed ('' when nothing was)."""
    if value is None:
        return {}, ""
    if not isinstance(value, dict):
        return {}, "requestMetadata dropped: not a JSON object"
    changed: list[bool] = []
    try:
        clean = _clean(value, depth=0, changed=changed)
    except _Dropped as exc:
        return {}, f"requestMetadata dropped: {exc}"
    note = "requestMetadata: removed NUL characters or unpaired surrogates" if changed else ""
    return clean, note


def _clean(value: Any, *, depth: int, changed: list[bool]) -> Any:
    if depth > MAX_METADATA_DEPTH:
        raise _Dropped(f"nested deeper than {MAX_METADATA_DEPTH} levels")
    if isinstance(value, str):
        cleaned = text_clean(value)
        if cleaned != value:
            changed.append(True)
        return cleaned
    if isinstance(value, bool) or value is None or isinstance(value, int):
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise _Dropped("holds a non-finite number (NaN or Infinity)")
        return value
    if isinstance(value, dict):
        deeper = depth + 1
        return {
            _clean(str(k), depth=deeper, changed=changed): _clean(v, depth=deeper, changed=changed)
            for k, v in value.items()
        }
    if isinstance(value, list | tuple):
        return [_clean(v, depth=depth + 1, changed=changed) for v in value]
    raise _Dropped(f"holds a {type(value).__name__}, not a JSON value")


def count_clean(value: Any) -> int | None:
    """A token count as a BIGINT (0 when absent); None when it is not a finite count."""
    if value is None or value == "":
        return 0
    if isinstance(value, bool):
        return None
    try:
        number = int(value)
    except (TypeError, ValueError, OverflowError):
        return None
    return number if 0 <= number <= BIGINT_MAX else None


def float_clean(value: Any) -> float | None:
    """A finite float, or None."""
    try:
        number = float(value)
    except (TypeError, ValueError, OverflowError):
        return None
    return number if math.isfinite(number) else None
