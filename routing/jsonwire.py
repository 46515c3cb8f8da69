"""JSON on the inference path: orjson, and the standard library for what only it reads.

A request body is parsed once and the upstream gets that parse written back (never the client's
bytes with `model` spliced in): a body with a key twice, spelled with escapes (`"mod\\u0065l"`) or
nested where the limits look (`{"type": "image_url", ..., "type": "text"}` in a content part)
would otherwise mean one thing to the limits and another to an upstream whose parser keeps the
first duplicate. Writing the parse back costs about a microsecond per kilobyte with orjson.
"""

from __future__ import annotations

import json
from typing import Any

import orjson


def json_parse(raw: bytes | str) -> tuple[Any, bool]:
    """The value of `raw` and whether it is strict JSON (False: only the standard library reads
    it: NaN, Infinity, lone surrogates, UTF-16); ValueError or RecursionError when neither does."""
    try:
        return orjson.loads(raw), True
    except orjson.JSONDecodeError:
        return json.loads(raw), False


def json_value(raw: bytes | str) -> Any:
    """The value of `raw` (ValueError or RecursionError when it is not JSON)."""
    return json_parse(raw)[0]


def json_write(value: Any, *, strict: bool = True) -> bytes:
    """`value` as compact JSON; `strict=False` writes a value json_parse read leniently the way
    the standard library does (orjson would turn NaN into null)."""
    if strict:
        try:
            return orjson.dumps(value)
        except TypeError:
            pass  # an integer beyond 64 bits, a string with a lone surrogate
    return json.dumps(value, separators=(",", ":")).encode()
