"""Hypothesis strategies for inference requests: JSON values, bodies, slugs, header bytes."""

from __future__ import annotations

import string
from typing import Any

from hypothesis import strategies as st

from tests.proxy.conftest import SLUG

SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False)
    | st.text(max_size=40)
)
JSON = st.recursive(
    SCALARS,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4)
    ),
    max_leaves=16,
)
SLUG_TEXT = st.from_regex(r"[a-z0-9][a-z0-9._-]{0,20}/[a-z0-9][a-z0-9._-]{0,20}", fullmatch=True)
MODELS = st.just(SLUG) | SLUG_TEXT | st.text(max_size=60) | JSON
# Small completion budgets reach the upstream; huge ones must be refused by the limits.
BUDGETS = (
    st.integers(min_value=-5, max_value=32) | st.integers(min_value=2**31, max_value=2**70) | JSON
)
MESSAGES = st.lists(
    st.fixed_dictionaries(
        {"role": st.sampled_from(["user", "system", "assistant"]) | st.text(max_size=8)},
        optional={"content": st.text(max_size=80) | JSON},
    ),
    max_size=3,
)
KNOWN = {
    "messages": MESSAGES | JSON,
    "prompt": st.text(max_size=80) | JSON,
    "input": st.text(max_size=80) | JSON,
    "stream": st.booleans() | JSON,
    "stream_options": st.fixed_dictionaries({"include_usage": st.booleans() | JSON}) | JSON,
    "max_tokens": BUDGETS,
    "max_completion_tokens": BUDGETS,
    "n": JSON,
    "temperature": JSON,
    "tools": JSON,
}


def _without_fake_controls(extra: dict[str, Any]) -> dict[str, Any]:
    # `fake` is the fake upstream's failure-injection key: generated ones would test the fake.
    extra.pop("fake", None)
    return extra


BODIES = st.builds(
    lambda required, optional, extra: {**_without_fake_controls(extra), **optional, **required},
    st.fixed_dictionaries({"model": MODELS}),
    st.fixed_dictionaries({}, optional=KNOWN),
    st.dictionaries(st.text(max_size=12), JSON, max_size=3),
)

# Header names as HTTP tokens, values as the bytes HTTP/1.1 allows in a field value.
TOKEN_CHARS = string.ascii_letters + string.digits + "!#$%&'*+-.^_`|~"
HEADER_NAMES = st.text(alphabet=TOKEN_CHARS, min_size=1, max_size=30).filter(
    lambda name: (
        not name.lower().startswith("x-fake-")
        and name.lower() not in {"host", "content-length", "transfer-encoding", "connection"}
    )
)
VALUE_BYTES = bytes([9, *range(0x20, 0x7F), *range(0x80, 0x100)])
HEADER_VALUES = st.binary(max_size=300).map(
    lambda raw: bytes(b for b in raw if b in VALUE_BYTES).strip(b" \t")
)
