"""SSE relay on the byte level: model name rewrite, usage capture, usage-chunk removal."""

from __future__ import annotations

import json
import re
from typing import Any

from routing.jsonwire import json_value
from routing.usage import Usage, usage_parse

MODEL_RE = re.compile(rb'"model"\s*:\s*"(?:[^"\\]|\\.)*"')
_MODEL_KEY = b'"model"'
_USAGE_RE = re.compile(rb'"usage"\s*:\s*\{')
# One generated delta of any kind: text, reasoning, a refusal, or a tool (or function) call; a
# Responses API event's `delta` string.
_OUTPUT_RE = re.compile(
    rb'"(?:content|text|reasoning_content|reasoning|refusal|delta)"\s*:\s*"(?!")'
    rb'|"(?:tool_calls|function_call)"\s*:\s*[\[{]\s*[^\]}\s]'
)
_DONE = b"data: [DONE]\n\n"
_USAGE_KEY = b'"usage"'
# Events kept uncounted until the stream's usage shows up (then they never need counting), at most
# this many bytes of them per stream.
UNCOUNTED_MAX_BYTES = 64 * 1024


def model_rewrite(data: bytes, *, slug: str) -> bytes:
    """Every top-level `"model": "..."` member shows the client's slug."""
    return MODEL_RE.sub(b'"model":' + json.dumps(slug).encode(), data)


def sse_error(*, message: str, type: str, code: str) -> bytes:
    """The final event of a stream that failed after it began."""
    error = {"message": message, "type": type, "code": code, "param": None}
    return b"data: " + json.dumps({"error": error}).encode() + b"\n\n"


class EventTooLarge(Exception):
    """One SSE event is longer than the relay may hold."""


class SseRelay:
    """Feeds upstream bytes, returns complete rewritten events; holds back `[DONE]`."""

    __slots__ = (
        "_buffer",
        "_max_event",
        "_model",
        "_upstream_model",
        "_strip_usage",
        "_counted",
        "_uncounted",
        "_uncounted_bytes",
        "usage",
        "done",
    )

    def __init__(self, *, slug: str, strip_usage: bool, max_event_bytes: int) -> None:
        self._buffer = b""
        self._max_event = max_event_bytes
        self._model = b'"model":' + json.dumps(slug).encode()
        # The upstream's own `"model":"..."` member as it first sent it: its later events
        # repeat it byte for byte, so a plain replace does what MODEL_RE would.
        self._upstream_model: bytes | None = None
        self._strip_usage = strip_usage
        self.usage: Usage | None = None
        # Generated deltas matter only to estimate a stream without usage: events are counted
        # when that estimate may be needed, not as they pass.
        self._counted = 0
        self._uncounted: list[bytes] = []
        self._uncounted_bytes = 0
        self.done = False

    @property
    def content_chunks(self) -> int:
        """The generated deltas (text, reasoning, refusal, tool call) relayed so far."""
        if self._uncounted:
            self._counted += sum(len(_OUTPUT_RE.findall(block)) for block in self._uncounted)
            self._uncounted, self._uncounted_bytes = [], 0
        return self._counted

    def feed(self, data: bytes) -> bytes:
        """The complete events now available (possibly b""); EventTooLarge past the bound."""
        held_cr = self._buffer.endswith(b"\r")
        buffer = self._buffer + data if self._buffer else data
        if held_cr or b"\r" in data:
            buffer = _lines_normalize(buffer)
        cut = buffer.rfind(b"\n\n")
        block, self._buffer = (b"", buffer) if cut < 0 else (buffer[: cut + 2], buffer[cut + 2 :])
        if len(self._buffer) > self._max_event:
            raise EventTooLarge(f"an event is longer than {self._max_event} bytes")
        return self._process(block) if block else b""

    def rest(self) -> bytes:
        """What is left when the upstream ends: a partial last event, rewritten."""
        rest, self._buffer = self._buffer.replace(b"\r", b"\n"), b""
        return self._process(rest + b"\n\n") if rest.strip() else b""

    def _process(self, block: bytes) -> bytes:
        block = self._model_rewrite(block)
        if self.usage is None:
            self._uncounted.append(block)
            self._uncounted_bytes += len(block)
            if self._uncounted_bytes > UNCOUNTED_MAX_BYTES:
                self._counted = self.content_chunks
        at = block.find(_USAGE_KEY)
        if at >= 0 and (found := _USAGE_RE.search(block, at)) is not None:
            block = self._usage_take(block, found.start())
            if self.usage is not None:
                self._uncounted, self._uncounted_bytes = [], 0
        if block.endswith(_DONE):
            self.done = True
            block = block[: -len(_DONE)]
        return block

    def _model_rewrite(self, block: bytes) -> bytes:
        """MODEL_RE.sub(slug member, block), by a plain replace when every `"model"` in the
        block starts the member the upstream sent first (MODEL_RE would match exactly that)."""
        seen = self._upstream_model
        if seen is None:
            match = MODEL_RE.search(block) if _MODEL_KEY in block else None
            if match is None:
                return block
            seen = self._upstream_model = match.group()
        replaced = block.replace(seen, self._model)
        if replaced.count(_MODEL_KEY) == replaced.count(self._model):
            return replaced
        return MODEL_RE.sub(self._model, block)

    def _usage_take(self, block: bytes, first: int) -> bytes:
        """Read the usage of the events that carry one (found in one scan of the block from the
        first, at `first`, not event by event) and drop a usage-only event the client did not
        ask for."""
        kept, pos, scanned = [], 0, 0
        for match in _USAGE_RE.finditer(block, first):
            if match.start() < scanned:
                continue  # within an event already read
            start = block.rfind(b"\n\n", 0, match.start())
            start = 0 if start < 0 else start + 2
            end = block.find(b"\n\n", match.start())
            end = len(block) if end < 0 else end
            scanned = end
            event = block[start:end]
            payload = _event_json(event) if _USAGE_RE.search(event) else None
            if payload is None or (usage := usage_parse(_usage_of(payload))) is None:
                continue
            self.usage = usage
            if self._strip_usage and not payload.get("choices"):
                kept.append(block[pos:start])
                pos = min(end + 2, len(block))
        if not kept:
            return block
        kept.append(block[pos:])
        return b"".join(kept)


def _usage_of(payload: dict[str, Any]) -> Any:
    """A chunk's `usage`, or that of the response a Responses API event carries (completed,
    incomplete or failed)."""
    response = payload.get("response")
    if "usage" not in payload and isinstance(response, dict):
        return response.get("usage")
    return payload.get("usage")


def _lines_normalize(buffer: bytes) -> bytes:
    """CRLF and lone CR line ends as LF (SSE allows all three); a trailing CR waits for the next
    bytes, which may begin with its LF."""
    held = buffer.endswith(b"\r")
    body = (buffer[:-1] if held else buffer).replace(b"\r\n", b"\n").replace(b"\r", b"\n")
    return body + b"\r" if held else body


def _event_json(event: bytes) -> dict[str, Any] | None:
    data = b"".join(line[5:].lstrip() for line in event.split(b"\n") if line.startswith(b"data:"))
    try:
        value = json_value(data)
    except (ValueError, RecursionError):
        return None
    return value if isinstance(value, dict) else None
