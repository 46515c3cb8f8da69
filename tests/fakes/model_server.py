"""Fast fake OpenAI-compatible model server: the upstream (vLLM & co) in tests, demo, benchmarks."""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import signal
import threading
import time
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from aiohttp import web

from tests.fakes.responses_api import ResponseJob

DEFAULT_TOKENS = 16
_FIELDS: dict[str, type] = {
    **dict.fromkeys(("tokens", "status", "drop_after", "pad_bytes"), int),
    **dict.fromkeys(("delay_ms", "first_byte_delay_ms"), float),
    **dict.fromkeys(("no_usage", "reject_stream_options"), bool),
    **dict.fromkeys(("retry_after", "body", "delta"), str),
}
# What a streamed chat delta carries: "\x00" marks where each token goes.
_DELTAS: dict[str, dict[str, Any]] = {
    "content": {"content": "\x00"},
    "reasoning": {"reasoning_content": "\x00"},
    "tool_calls": {"tool_calls": [{"index": 0, "function": {"arguments": "\x00"}}]},
}
_HEADERS = {f"x-fake-{name.replace('_', '-')}": name for name in _FIELDS}
_ERROR_KINDS = {
    401: ("invalid_request_error", "invalid_api_key"),
    404: ("invalid_request_error", "model_not_found"),
    429: ("requests", "rate_limit_exceeded"),
}
_ROUTES = {
    "/v1/chat/completions": "chat",
    "/v1/completions": "text",
    "/v1/embeddings": "emb",
    "/v1/responses": "resp",
}
_ids = itertools.count(1)
_ID_PREFIX = os.urandom(4).hex()
_dumps = json.JSONEncoder(separators=(",", ":")).encode


@dataclass
class RecordedRequest:
    """One received request; `completed` is None in flight, `chunks_sent` counts content chunks."""

    method: str
    path: str
    headers: dict[str, str]  # lower-cased names
    json: Any
    raw: bytes
    received_at: float
    completed: bool | None = None
    chunks_sent: int = 0
    status: int | None = None


@dataclass
class Control:
    """Per-request shaping and failures: server defaults < x-fake-* headers < body "fake"."""

    tokens: int | None = None
    delay_ms: float = 0.0
    first_byte_delay_ms: float = 0.0
    status: int | None = None
    drop_after: int | None = None
    no_usage: bool = False
    reject_stream_options: bool = False
    retry_after: str | None = None
    body: str | None = None
    delta: str = "content"  # the kind of streamed chat delta: content, reasoning, tool_calls
    pad_bytes: int = 0  # adds a "padding" member of this many bytes to the answer (or 1st event)


class BadRequest(Exception):
    """A client error answered with an OpenAI-style 400."""


def _coerce(name: str, value: Any) -> Any:
    kind = _FIELDS[name]
    if kind is bool and not isinstance(value, bool):
        return str(value).strip().lower() in ("1", "true", "yes")
    try:
        return kind(value)
    except (TypeError, ValueError):
        raise BadRequest(f"invalid fake control {name}={value!r}") from None


def parse_control(
    headers: Any, body: Any, delay_ms: float = 0, first_byte_ms: float = 0
) -> Control:
    """Build one request's Control from defaults, x-fake-* headers and the body's "fake" key."""
    ctl = Control(delay_ms=delay_ms, first_byte_delay_ms=first_byte_ms)
    for header, name in _HEADERS.items():
        value = headers.get(header)
        if value is not None:
            setattr(ctl, name, _coerce(name, value))
    fake = body.get("fake") if isinstance(body, dict) else None
    for name, value in fake.items() if isinstance(fake, dict) else ():
        if name in _FIELDS:
            setattr(ctl, name, _coerce(name, value))
    return ctl


def error_body(status: int, message: str) -> str:
    """OpenAI-style error JSON for a status."""
    default = ("server_error" if status >= 500 else "invalid_request_error", None)
    kind, code = _ERROR_KINDS.get(status, default)
    return _dumps({"error": {"message": message, "type": kind, "param": None, "code": code}})


def _json(body: Any, status: int = 200, retry_after: str | None = None) -> web.Response:
    data = body if isinstance(body, bytes) else _dumps(body).encode()
    headers = {"Retry-After": retry_after} if retry_after else None
    return web.Response(body=data, status=status, content_type="application/json", headers=headers)


def _error(status: int, message: str, retry_after: str | None = None) -> web.Response:
    return _json(error_body(status, message).encode(), status, retry_after)


def _injected_failure(ctl: Control) -> web.Response | None:
    if ctl.body is not None:
        headers = {"Retry-After": ctl.retry_after} if ctl.retry_after else None
        return web.Response(status=ctl.status or 500, text=ctl.body, headers=headers)
    if ctl.status is not None and ctl.status != 200:
        return _error(ctl.status, f"Injected failure ({ctl.status}).", ctl.retry_after)
    return None


def _model(name: str) -> dict[str, Any]:
    return {"id": name, "object": "model", "created": 0, "owned_by": "fake"}


def count_tokens(value: Any) -> int:
    """Deterministic token count: whitespace words of strings, length of token-id lists."""
    if isinstance(value, str):
        return len(value.split())
    if isinstance(value, list):
        if value and all(isinstance(v, int) for v in value):
            return len(value)
        return sum(count_tokens(v) for v in value)
    if isinstance(value, dict):
        return count_tokens(value.get("text") if "text" in value else value.get("content"))
    return 0


def _lax_int(value: Any) -> int | None:
    """An integer field parsed the way pydantic's lax mode does (None when it would not parse)."""
    if isinstance(value, str):
        try:
            value = float(value.strip())
        except ValueError:
            return None
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value if isinstance(value, int) else None


def _media_parts(messages: Any) -> int:
    """Content parts of chat messages that are not text."""
    contents = (
        [m.get("content") for m in messages if isinstance(m, dict)]
        if isinstance(messages, list)
        else []
    )
    return sum(
        isinstance(part, dict) and part.get("type") not in (None, "text")
        for content in contents
        if isinstance(content, list)
        for part in content
    )


def _prompt_count(prompt: Any) -> int:
    """Prompts of a completions body: one per item of a list, unless it is one token-id list."""
    if isinstance(prompt, list) and prompt and not all(isinstance(v, int) for v in prompt):
        return len(prompt)
    return 1


def _usage(prompt: int, completion: int) -> dict[str, Any]:
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "prompt_tokens_details": {"cached_tokens": 0},
    }


def _embedding(text: Any, dim: int) -> list[float]:
    seed = zlib.crc32(_dumps(text).encode())
    return [((seed * (i + 1) * 2654435761) % 2001 - 1000) / 1000.0 for i in range(dim)]


@dataclass
class _Job:
    """Everything one completion needs, computed once per request."""

    chat: bool
    model: str
    prompt_tokens: int
    completion_tokens: int
    finish_reason: str
    usage: bool
    choices: int = 1  # returned: prompts x n
    generated: int = 1  # sequences produced (and billed): prompts x max(n, best_of)
    delta: str = "content"
    pad_bytes: int = 0
    id: str = field(default_factory=lambda: f"{_ID_PREFIX}{next(_ids):x}")
    created: int = field(default_factory=lambda: int(time.time()))

    def _head(self, kind: str) -> dict[str, Any]:
        prefix = "chatcmpl-" if self.chat else "cmpl-"
        return {
            "id": prefix + self.id,
            "object": kind,
            "created": self.created,
            "model": self.model,
        }

    def response(self) -> bytes:
        """The non-streaming JSON body."""
        text = " ".join(f"tok{i}" for i in range(self.completion_tokens))
        message = {"role": "assistant", "content": text, "refusal": None}
        body: dict[str, Any] = {"message": message} if self.chat else {"text": text}
        choices = [
            {"index": i, **body, "logprobs": None, "finish_reason": self.finish_reason}
            for i in range(self.choices)
        ]
        out = self._head("chat.completion" if self.chat else "text_completion")
        out |= {"choices": choices, "system_fingerprint": "fp_fake"}
        if self.usage:
            out["usage"] = self._usage()
        if self.pad_bytes:
            out["padding"] = "x" * self.pad_bytes
        return _dumps(out).encode()

    def _chunk(self, choices: list[Any], usage: Any = None) -> bytes:
        out = self._head("chat.completion.chunk" if self.chat else "text_completion")
        out["choices"] = choices
        if self.usage:
            out["usage"] = usage
        return b"data: " + _dumps(out).encode() + b"\n\n"

    def _usage(self) -> dict[str, Any]:
        return _usage(self.prompt_tokens, self.completion_tokens * self.generated)

    def _choice(
        self, delta: dict[str, Any], text: str, finish: str | None, index: int = 0
    ) -> dict[str, Any]:
        body: dict[str, Any] = {"delta": delta} if self.chat else {"text": text}
        return {"index": index, **body, "logprobs": None, "finish_reason": finish}

    def events(self) -> Iterator[tuple[bytes, bool]]:
        """SSE events as (bytes, is_content_chunk)."""
        indexes = range(self.choices)
        if self.chat:
            role = {"role": "assistant", "content": ""}
            for index in indexes:
                yield self._chunk([self._choice(role, "", None, index)]), False
        if self.pad_bytes:
            yield b'data: {"padding":"' + b"x" * self.pad_bytes + b'"}\n\n', False
        # Content chunks dominate benchmarks: splice each token into one pre-encoded template.
        templates = [
            self._chunk([self._choice(_DELTAS[self.delta], "\x00", None, index)]).split(
                b"\\u0000", 1
            )
            for index in indexes
        ]
        for i in range(self.completion_tokens):
            for before, after in templates:
                yield before + (f" tok{i}" if i else "tok0").encode() + after, True
        for index in indexes:
            yield self._chunk([self._choice({}, "", self.finish_reason, index)]), False
        if self.usage:
            yield self._chunk([], self._usage()), False
        yield b"data: [DONE]\n\n", False


@dataclass
class FakeModelServer:
    """An aiohttp fake upstream; create and bind it with `start()`."""

    tokens: int = DEFAULT_TOKENS
    answer_tokens: int | None = None  # every answer this long (cut at the request's cap)
    media_tokens: int = 0  # prompt tokens of each image/audio/video/file part of a chat message
    delay_ms: float = 0.0
    first_byte_delay_ms: float = 0.0
    api_key: str | None = None
    record: bool = True
    models: list[str] = field(default_factory=lambda: ["fake-model"])
    embedding_dim: int = 8
    max_records: int = 10_000
    requests: list[RecordedRequest] = field(default_factory=list, init=False)
    host: str = field(default="127.0.0.1", init=False)
    port: int = field(default=0, init=False)
    _runner: web.AppRunner | None = field(default=None, init=False, repr=False)

    @property
    def base_url(self) -> str:
        """Root URL without /v1."""
        return f"http://{self.host}:{self.port}"

    @property
    def url(self) -> str:
        """OpenAI base URL (…/v1)."""
        return f"{self.base_url}/v1"

    def clear(self) -> None:
        """Forget recorded requests."""
        self.requests.clear()

    def app(self) -> web.Application:
        """The aiohttp application (no middlewares)."""
        app = web.Application(client_max_size=64 * 1024 * 1024)
        for path, kind in _ROUTES.items():
            app.router.add_post(path, partial(self._run, kind=kind))
        app.router.add_get("/v1/models", partial(self._run, kind="models"))
        app.router.add_get("/healthz", self._healthz)
        return app

    async def listen(self, host: str = "127.0.0.1", port: int = 0) -> None:
        """Bind and serve; `port=0` picks a free port."""
        # handler_cancellation: a client disconnect cancels the handler, so it is recorded at once.
        self._runner = web.AppRunner(self.app(), access_log=None, handler_cancellation=True)
        await self._runner.setup()
        await web.TCPSite(self._runner, host, port, backlog=1024, reuse_address=True).start()
        self.host, self.port = host, self._runner.addresses[0][1]

    async def close(self) -> None:
        """Stop serving."""
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    def _record(self, request: web.Request, raw: bytes, body: Any) -> RecordedRequest:
        if not self.record:
            return RecordedRequest(request.method, request.path, {}, None, b"", time.monotonic())
        headers = {k.lower(): v for k, v in request.headers.items()}
        rec = RecordedRequest(request.method, request.path, headers, body, raw, time.monotonic())
        if len(self.requests) >= 2 * self.max_records:
            del self.requests[: self.max_records]
        self.requests.append(rec)
        return rec

    async def _run(self, request: web.Request, kind: str) -> web.StreamResponse:
        raw = await request.read() if request.can_read_body else b""
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = None
        rec = self._record(request, raw, body)
        try:
            resp = await self._dispatch(request, rec, body, kind)
        except BaseException:  # cancelled by a client disconnect (handler_cancellation)
            rec.completed = False
            raise
        rec.status = resp.status
        if rec.completed is None:
            rec.completed = True
        return resp

    def _reject(self, request: web.Request, body: Any, kind: str) -> web.Response | None:
        """The 401/400 answer to an unauthorized or malformed request, if any."""
        if self.api_key is not None:
            if request.headers.get("Authorization") != f"Bearer {self.api_key}":
                return _error(401, "Incorrect API key provided.")
        if kind == "models":
            return None
        if not isinstance(body, dict):
            return _error(400, "We could not parse the JSON body of your request.")
        if not isinstance(body.get("model"), str) or not body["model"]:
            return _error(400, "You must provide a model parameter.")
        return None

    async def _dispatch(
        self, request: web.Request, rec: RecordedRequest, body: Any, kind: str
    ) -> web.StreamResponse:
        if (rejected := self._reject(request, body, kind)) is not None:
            return rejected
        body = body if kind != "models" else {}
        try:
            ctl = parse_control(request.headers, body, self.delay_ms, self.first_byte_delay_ms)
        except BadRequest as exc:
            return _error(400, str(exc))
        if ctl.first_byte_delay_ms > 0:
            await asyncio.sleep(ctl.first_byte_delay_ms / 1000)
        if (injected := _injected_failure(ctl)) is not None:
            return injected
        if kind == "models":
            return _json({"object": "list", "data": [_model(m) for m in self.models]})
        if kind == "emb":
            return self._embed(body, ctl)
        if kind == "resp":
            return await self._respond(request, rec, body, ctl)
        return await self._complete(request, rec, body, ctl, kind == "chat")

    def _answer_length(self, ctl: Control, limit: int | None) -> tuple[int, bool]:
        """Tokens of one answer, and whether the cap `limit` cut it."""
        answer = next(
            v for v in (ctl.tokens, self.answer_tokens, limit, self.tokens) if v is not None
        )
        count = answer if limit is None else min(answer, limit)
        return max(0, count), limit is not None and answer >= limit

    async def _respond(
        self, request: web.Request, rec: RecordedRequest, body: Any, ctl: Control
    ) -> web.StreamResponse:
        """The Responses API: tokens of `input` and `instructions` in, `max_output_tokens` cap."""
        prompt = count_tokens(body.get("input")) + count_tokens(body.get("instructions"))
        count, cut = self._answer_length(ctl, _lax_int(body.get("max_output_tokens")))
        job = ResponseJob(
            f"{_ID_PREFIX}{next(_ids):x}",
            body["model"],
            max(1, prompt),
            count,
            cut,
            not ctl.no_usage,
        )
        if body.get("stream") is True:
            return await self._stream(request, rec, job, ctl)
        return _json(job.response())

    async def _complete(
        self, request: web.Request, rec: RecordedRequest, body: Any, ctl: Control, chat: bool
    ) -> web.StreamResponse:
        stream, options = body.get("stream") is True, body.get("stream_options")
        if ctl.reject_stream_options and options is not None:
            return _error(400, "stream_options is not supported by this model server.")
        prompt = max(1, count_tokens(body.get("messages") if chat else body.get("prompt")))
        prompt += self.media_tokens * _media_parts(body.get("messages") if chat else None)
        # As vLLM and SGLang read them: `max_completion_tokens or max_tokens`, lax integers.
        limit = _lax_int(body.get("max_completion_tokens")) or _lax_int(body.get("max_tokens"))
        count, cut = self._answer_length(ctl, limit)
        finish = "length" if cut else "stop"
        n = max(1, _lax_int(body.get("n")) or 1)
        prompts = 1 if chat else _prompt_count(body.get("prompt"))
        asked = not stream or (isinstance(options, dict) and options.get("include_usage") is True)
        if ctl.delta not in _DELTAS:
            return _error(400, f"invalid fake control delta={ctl.delta!r}")
        job = _Job(
            chat,
            body["model"],
            prompt,
            count,
            finish,
            asked and not ctl.no_usage,
            choices=prompts * n,
            generated=prompts * max(n, _lax_int(body.get("best_of")) or 1),
            delta=ctl.delta,
            pad_bytes=max(0, ctl.pad_bytes),
        )
        return await self._stream(request, rec, job, ctl) if stream else _json(job.response())

    async def _stream(
        self, request: web.Request, rec: RecordedRequest, job: _Job | ResponseJob, ctl: Control
    ) -> web.StreamResponse:
        headers = {"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}
        resp, delay, rec.status = web.StreamResponse(headers=headers), ctl.delay_ms / 1000, 200
        try:
            await resp.prepare(request)
            for data, content in job.events():
                if content and ctl.drop_after is not None and rec.chunks_sent >= ctl.drop_after:
                    rec.completed = False
                    if request.transport is not None:
                        request.transport.close()  # abrupt: no terminating chunk, no [DONE]
                    return resp
                if content and delay > 0 and rec.chunks_sent:
                    await asyncio.sleep(delay)
                await resp.write(data)
                rec.chunks_sent += content
            await resp.write_eof()
        except ConnectionResetError:
            rec.completed = False
        return resp

    def _embed(self, body: dict[str, Any], ctl: Control) -> web.Response:
        inputs = body.get("input")
        if isinstance(inputs, str) or (
            isinstance(inputs, list) and inputs and isinstance(inputs[0], int)
        ):
            inputs = [inputs]
        if not isinstance(inputs, list) or not inputs:
            return _error(400, "'input' must be a non-empty string or array.")
        dim = body["dimensions"] if isinstance(body.get("dimensions"), int) else self.embedding_dim
        data = [
            {"object": "embedding", "index": i, "embedding": _embedding(text, dim)}
            for i, text in enumerate(inputs)
        ]
        out: dict[str, Any] = {"object": "list", "data": data, "model": body["model"]}
        if not ctl.no_usage:
            prompt = max(1, count_tokens(inputs))
            out["usage"] = {"prompt_tokens": prompt, "total_tokens": prompt}
        if ctl.pad_bytes > 0:
            out["padding"] = "x" * ctl.pad_bytes
        return _json(out)

    async def _healthz(self, request: web.Request) -> web.Response:
        return _json(b'{"status":"ok"}')


async def start(host: str = "127.0.0.1", port: int = 0, **options: Any) -> FakeModelServer:
    """Start a fake server on the running loop; options are FakeModelServer fields."""
    server = FakeModelServer(**options)
    await server.listen(host, port)
    return server


class FakeModelServerThread:
    """A FakeModelServer on its own loop in a daemon thread, for sync tests (context manager)."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0, **options: Any) -> None:
        self._start = partial(start, host, port, **options)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True, name="fake-llm")
        self._server: FakeModelServer | None = None

    def start(self) -> FakeModelServerThread:
        """Start the thread and wait until the server is bound."""
        self._thread.start()
        self._server = asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(10)
        return self

    def stop(self) -> None:
        """Stop the server, the loop and the thread."""
        if self._server is not None:
            asyncio.run_coroutine_threadsafe(self._server.close(), self._loop).result(10)
            self._server = None
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        self._loop.close()

    def __enter__(self) -> FakeModelServerThread:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def server(self) -> FakeModelServer:
        """The running server (its settings may be changed between requests)."""
        assert self._server is not None, "server not started"
        return self._server

    @property
    def url(self) -> str:
        """OpenAI base URL (…/v1)."""
        return self.server.url

    @property
    def base_url(self) -> str:
        """Root URL without /v1."""
        return self.server.base_url

    @property
    def port(self) -> int:
        """Bound port."""
        return self.server.port

    @property
    def requests(self) -> list[RecordedRequest]:
        """A snapshot of the recorded requests (the objects themselves keep updating)."""
        return list(self.server.requests)

    def clear(self) -> None:
        """Forget recorded requests."""
        self.server.clear()


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9100)
    parser.add_argument("--tokens", type=int, default=DEFAULT_TOKENS, help="if no max_tokens")
    parser.add_argument(
        "--answer-tokens", type=int, default=None, help="tokens per choice, cut at the cap"
    )
    parser.add_argument("--delay-ms", type=float, default=0.0, help="between streamed tokens")
    parser.add_argument("--first-byte-delay-ms", type=float, default=0.0)
    parser.add_argument("--api-key", default=None, help="require Authorization: Bearer <key>")
    parser.add_argument("--no-record", action="store_true", help="keep no request log")
    parser.add_argument("--models", default="fake-model", help="comma-separated, for /v1/models")
    return parser.parse_args(argv)


async def _serve(args: argparse.Namespace) -> None:
    names = ("tokens", "answer_tokens", "delay_ms", "first_byte_delay_ms", "api_key")
    shared = {k: getattr(args, k) for k in names}
    models = [m for m in args.models.split(",") if m]
    server = await start(args.host, args.port, record=not args.no_record, models=models, **shared)
    print(f"fake model server listening on {server.base_url}", flush=True)
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        asyncio.get_running_loop().add_signal_handler(sig, stop.set)
    await stop.wait()
    await server.close()


def main(argv: list[str] | None = None) -> None:
    """CLI entry point."""
    args = _parse_args(argv)
    try:
        import uvloop  # optional: a faster loop when installed
    except ImportError:
        asyncio.run(_serve(args))
    else:
        uvloop.run(_serve(args))


if __name__ == "__main__":
    main()
