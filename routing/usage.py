"""Token accounting: usage read from upstream answers, estimated when they carry none."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from gateway_project.kernel.errors import ValidationFailed


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


# The names of (input, output, input details) in a chat/completions/embeddings `usage` object and
# in a Responses API one.
_USAGE_NAMES = (
    ("prompt_tokens", "completion_tokens", "prompt_tokens_details"),
    ("input_tokens", "output_tokens", "input_tokens_details"),
)


def usage_parse(value: Any) -> Usage | None:
    """An OpenAI `usage` object (either API's names) as Usage (None when absent or malformed)."""
    if not isinstance(value, dict):
        return None
    names = _USAGE_NAMES[0] if "prompt_tokens" in value else _USAGE_NAMES[1]
    prompt, completion = _count_of(value.get(names[0])), _count_of(value.get(names[1], 0))
    if prompt is None or completion is None:
        return None
    details = value.get(names[2])
    cached = _count_of(details.get("cached_tokens")) if isinstance(details, dict) else None
    return Usage(prompt, completion, cached or 0)


def _count_of(value: Any) -> int | None:
    """A token count as an upstream reports it: a non-negative integer (None otherwise)."""
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    return None


def usage_estimate(*, body_bytes: int, output_chunks: int) -> Usage:
    """Estimate when the upstream reports nothing: body bytes / 4 in, one token per chunk out."""
    return Usage(max(1, body_bytes // 4), output_chunks, 0, estimated=True)


# OpenAI's own bound on `n`; `best_of` shares it.
MAX_CHOICES = 128
# The completion-cap fields each route's upstreams read, in the order they read them: vLLM and
# SGLang use `max_completion_tokens or max_tokens`, so a 0 or null falls through to the next.
CAP_FIELDS = {
    "chat": ("max_completion_tokens", "max_tokens"),
    "completions": ("max_tokens",),
    "responses": ("max_output_tokens",),
}
ALL_CAP_FIELDS = ("max_completion_tokens", "max_tokens", "max_output_tokens")
# Content parts that stand for tokens their bytes do not show (a short URL can be a whole video).
MEDIA_PARTS = frozenset(
    {"image_url", "input_image", "input_audio", "audio_url", "video_url", "file", "input_file"}
)


@dataclass(frozen=True, slots=True)
class Budget:
    """What admission reserves, and the body fields that keep the upstream within it."""

    tokens: int
    fields: dict[str, int]
    # The part of `tokens` that is prompt (SPEND prices it at the input price); a detail of how
    # `tokens` was reached, so budgets compare on what is reserved and sent.
    prompt: int = field(default=0, compare=False)


def usage_reserve(
    *,
    kind: str,
    body: dict[str, Any],
    body_bytes: int,
    default_max_tokens: int,
    ceiling: int,
    media_tokens: int = 0,
) -> Budget:
    """An upper bound of a request's tokens: prompt estimate + choices x prompts x completion cap.

    Raises ValidationFailed (400) for a shape whose output cannot be bounded.
    """
    source = body.get("input") if kind in ("embeddings", "responses") else body.get("prompt")
    prompt = max(body_bytes // 4, _token_ids(source)) + media_tokens * _media_parts(body)
    if kind not in CAP_FIELDS:
        return Budget(prompt, {}, prompt)
    cap = _cap(
        body, names=CAP_FIELDS[kind], default=min(default_max_tokens, ceiling), ceiling=ceiling
    )
    # Every cap field the client sent carries the cap, read by this route or not: an upstream that
    # reads one more than we expect still stops in time.
    sent = [name for name in ALL_CAP_FIELDS if name in body]
    fields = dict.fromkeys(sent or CAP_FIELDS[kind], cap)
    choices = 1
    if kind != "responses":
        counts = {name: _count(body, name) for name in ("n", "best_of")}
        fields |= {name: count for name, count in counts.items() if count is not None}
        choices = max(count or 1 for count in counts.values())
    prompts = _prompts(body.get("prompt")) if kind == "completions" else 1
    return Budget(prompt + choices * prompts * cap, fields, prompt)


def _invalid(name: str, rule: str) -> ValidationFailed:
    return ValidationFailed(f"`{name}` must be {rule}.", code="invalid_parameter", param=name)


def _whole(body: dict[str, Any], name: str) -> int | None:
    """A field as the integer an upstream would parse it to (None when absent or null)."""
    value = body.get(name)
    if value is None:
        return None
    if isinstance(value, str):
        value = _numeral(value)
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise _invalid(name, "a non-negative integer")
    return value


def _numeral(text: str) -> int | float | None:
    try:
        return int(text.strip())
    except ValueError:
        pass
    try:
        return float(text.strip())
    except ValueError:
        return None


def _cap(body: dict[str, Any], *, names: tuple[str, ...], default: int, ceiling: int) -> int:
    for name in names:
        value = _whole(body, name)
        if value and value > ceiling:
            raise _invalid(name, f"an integer of at most {ceiling}")
        if value:
            return value
    return default


def _count(body: dict[str, Any], name: str) -> int | None:
    count = _whole(body, name)
    if count is not None and not 1 <= count <= MAX_CHOICES:
        raise _invalid(name, f"an integer from 1 to {MAX_CHOICES}")
    return count


def _prompts(prompt: Any) -> int:
    """Prompts of a completions body: a list holds one per item, unless it is one token-id list."""
    if not isinstance(prompt, list) or _is_ids(prompt):
        return 1
    return len(prompt)


def _token_ids(value: Any) -> int:
    """Token ids sent as integers: each is a token though it may take only two bytes of JSON."""
    if not isinstance(value, list):
        return 0
    rows = value if not _is_ids(value) else [value]
    return sum(len(row) for row in rows if isinstance(row, list) and _is_ids(row))


def _media_parts(body: dict[str, Any]) -> int:
    """Image, audio, video and file parts of the messages (chat) or input items (Responses)."""
    items = body.get("messages", body.get("input"))
    if not isinstance(items, list):
        return 0
    contents = [item.get("content") for item in items if isinstance(item, dict)]
    return sum(
        isinstance(part, dict) and part.get("type") in MEDIA_PARTS
        for content in contents
        if isinstance(content, list)
        for part in content
    )


def _is_ids(value: list[Any]) -> bool:
    return all(isinstance(item, int) for item in value)
