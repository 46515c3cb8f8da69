"""Token accounting: usage read from upstream answers, estimated when they carry none."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class Usage:
    """Tokens of one request; `estimated` when the upstream did not report them."""

    input_tokens: int
    output_tokens: int
    cached_input_tokens: int = 0
    estimated: bool = False

    @property
    def total(self) -> int:
        """Prompt plus completion tokens (what TOKEN limits count)."""
        return self.input_tokens + self.output_tokens


def usage_parse(value: Any) -> Usage | None:
    """An OpenAI `usage` object as Usage (None when absent or malformed)."""
    if not isinstance(value, dict):
        return None
    prompt, completion = value.get("prompt_tokens"), value.get("completion_tokens", 0)
    if not isinstance(prompt, int) or not isinstance(completion, int):
        return None
    details = value.get("prompt_tokens_details")
    cached = details.get("cached_tokens") if isinstance(details, dict) else None
    return Usage(prompt, completion, cached if isinstance(cached, int) else 0)


def usage_estimate(*, body_bytes: int, output_chunks: int) -> Usage:
    """Estimate when the upstream reports nothing: body bytes / 4 in, one token per chunk out."""
    return Usage(max(1, body_bytes // 4), output_chunks, 0, estimated=True)


def usage_reserve(*, body: dict[str, Any], body_bytes: int, default_max_tokens: int) -> int:
    """Tokens reserved at admission (SPEC §8): prompt estimate plus the completion budget."""
    budget = body.get("max_completion_tokens")
    if not isinstance(budget, int):
        budget = body.get("max_tokens")
    if not isinstance(budget, int) or budget < 0:
        budget = default_max_tokens
    return body_bytes // 4 + budget
