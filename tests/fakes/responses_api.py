"""The fake model server's OpenAI Responses API (`POST /v1/responses`): one JSON answer, or the
stream of typed events OpenAI sends (response.created ... response.completed)."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

_dumps = json.JSONEncoder(separators=(",", ":")).encode


@dataclass
class ResponseJob:
    """Everything one Responses API answer needs, computed once per request."""

    id: str
    model: str
    input_tokens: int
    output_tokens: int
    incomplete: bool  # cut by max_output_tokens
    usage: bool
    created_at: int = field(default_factory=lambda: int(time.time()))

    @property
    def _message_id(self) -> str:
        return "msg_" + self.id

    def _text(self) -> str:
        return " ".join(f"tok{i}" for i in range(self.output_tokens))

    def _message(self, text: str, status: str) -> dict[str, Any]:
        part = {"type": "output_text", "text": text, "annotations": []}
        return {
            "id": self._message_id,
            "type": "message",
            "status": status,
            "role": "assistant",
            "content": [part] if status == "completed" or text else [],
        }

    def _usage(self) -> dict[str, Any]:
        return {
            "input_tokens": self.input_tokens,
            "input_tokens_details": {"cached_tokens": 0},
            "output_tokens": self.output_tokens,
            "output_tokens_details": {"reasoning_tokens": 0},
            "total_tokens": self.input_tokens + self.output_tokens,
        }

    def _response(self, status: str, output: list[Any], usage: Any) -> dict[str, Any]:
        return {
            "id": "resp_" + self.id,
            "object": "response",
            "created_at": self.created_at,
            "status": status,
            "error": None,
            "incomplete_details": {"reason": "max_output_tokens"}
            if status == "incomplete"
            else None,
            "instructions": None,
            "max_output_tokens": None,
            "model": self.model,
            "output": output,
            "parallel_tool_calls": True,
            "temperature": 1.0,
            "tool_choice": "auto",
            "tools": [],
            "top_p": 1.0,
            "metadata": {},
            "usage": usage,
        }

    def _final(self) -> dict[str, Any]:
        status = "incomplete" if self.incomplete else "completed"
        usage = self._usage() if self.usage else None
        return self._response(status, [self._message(self._text(), "completed")], usage)

    def response(self) -> bytes:
        """The non-streaming JSON body."""
        return _dumps(self._final()).encode()

    def events(self) -> Iterator[tuple[bytes, bool]]:
        """SSE events as (bytes, is_content_delta)."""
        seq = iter(range(1_000_000))
        started = self._response("in_progress", [], None)
        place = {"item_id": self._message_id, "output_index": 0, "content_index": 0}
        empty_part = {"type": "output_text", "text": "", "annotations": []}
        yield _event("response.created", next(seq), response=started), False
        yield _event("response.in_progress", next(seq), response=started), False
        item = self._message("", "in_progress")
        yield _event("response.output_item.added", next(seq), output_index=0, item=item), False
        yield _event("response.content_part.added", next(seq), **place, part=empty_part), False
        for i in range(self.output_tokens):
            delta = f" tok{i}" if i else "tok0"
            yield (
                _event("response.output_text.delta", next(seq), **place, delta=delta, logprobs=[]),
                True,
            )
        text = self._text()
        yield _event("response.output_text.done", next(seq), **place, text=text, logprobs=[]), False
        part = {"type": "output_text", "text": text, "annotations": []}
        yield _event("response.content_part.done", next(seq), **place, part=part), False
        done = self._message(text, "completed")
        yield _event("response.output_item.done", next(seq), output_index=0, item=done), False
        final = self._final()
        kind = "response.incomplete" if self.incomplete else "response.completed"
        yield _event(kind, next(seq), response=final), False


def _event(kind: str, sequence: int, **members: Any) -> bytes:
    data = _dumps({"type": kind, "sequence_number": sequence, **members}).encode()
    return b"event: " + kind.encode() + b"\ndata: " + data + b"\n\n"
