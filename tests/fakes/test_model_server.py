"""Tests for the fake OpenAI-compatible model server."""

from __future__ import annotations

import asyncio
import json
import os
import select
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.fakes.model_server import FakeModelServerThread, RecordedRequest, start

CHAT = {
    "model": "up-model",
    "messages": [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": [{"type": "text", "text": "hello big world"}]},
    ],
}


@pytest.fixture(scope="module")
def server() -> Iterator[FakeModelServerThread]:
    """One shared fake server for the module."""
    with FakeModelServerThread() as srv:
        yield srv


@pytest.fixture()
def client(server: FakeModelServerThread) -> Iterator[httpx.Client]:
    """An httpx client pointed at the fake's /v1, with an empty request log."""
    server.clear()
    with httpx.Client(base_url=server.url, timeout=5) as c:
        yield c


def wait_for(predicate: Callable[[], bool], timeout: float = 2.0) -> None:
    """Poll until predicate() is true or fail after timeout seconds."""
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.005)


def sse(text: str) -> list[Any]:
    """Parse an SSE body into JSON payloads, keeping the [DONE] marker as a string."""
    events = [line[len("data: ") :] for line in text.split("\n\n") if line.startswith("data: ")]
    return [e if e == "[DONE]" else json.loads(e) for e in events]


def content(chunks: list[Any]) -> str:
    """Join chat content deltas."""
    return "".join(
        c["choices"][0]["delta"].get("content", "")
        for c in chunks
        if isinstance(c, dict) and c["choices"]
    )


def test_chat_non_stream_shape_and_usage(client: httpx.Client) -> None:
    r = client.post("/chat/completions", json=CHAT | {"max_tokens": 5})
    assert r.status_code == 200 and r.headers["content-type"].startswith("application/json")
    body = r.json()
    assert body["object"] == "chat.completion" and body["id"].startswith("chatcmpl-")
    assert body["model"] == "up-model" and isinstance(body["created"], int)
    choice = body["choices"][0]
    assert choice["message"]["role"] == "assistant" and choice["finish_reason"] == "length"
    assert choice["message"]["content"] == "tok0 tok1 tok2 tok3 tok4"
    assert body["usage"] == {
        "prompt_tokens": 5,
        "completion_tokens": 5,
        "total_tokens": 10,
        "prompt_tokens_details": {"cached_tokens": 0},
    }


def test_token_count_defaults_and_overrides(client: httpx.Client) -> None:
    assert client.post("/chat/completions", json=CHAT).json()["usage"]["completion_tokens"] == 16
    body = client.post(
        "/chat/completions", json=CHAT | {"max_completion_tokens": 9, "fake": {"tokens": 7}}
    ).json()
    assert body["usage"]["completion_tokens"] == 7 and body["choices"][0]["finish_reason"] == "stop"
    body = client.post(
        "/chat/completions", json=CHAT | {"max_completion_tokens": 2, "fake": {"tokens": 7}}
    ).json()
    assert body["usage"]["completion_tokens"] == 2
    assert body["choices"][0]["finish_reason"] == "length"
    r = client.post("/chat/completions", json=CHAT, headers={"x-fake-tokens": "3"})
    assert len(r.json()["choices"][0]["message"]["content"].split()) == 3
    assert (
        "usage"
        not in client.post("/chat/completions", json=CHAT | {"fake": {"no_usage": True}}).json()
    )


def test_stream_chunks_without_usage(client: httpx.Client) -> None:
    r = client.post("/chat/completions", json=CHAT | {"stream": True, "fake": {"tokens": 4}})
    assert r.headers["content-type"].startswith("text/event-stream")
    events = sse(r.text)
    assert events[-1] == "[DONE]" and len(events) == 1 + 4 + 1 + 1
    chunks = events[:-1]
    assert all(c["object"] == "chat.completion.chunk" and "usage" not in c for c in chunks)
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"
    assert content(chunks) == "tok0 tok1 tok2 tok3"


def test_stream_usage_chunk_only_when_asked(client: httpx.Client) -> None:
    req = CHAT | {"stream": True, "max_tokens": 3, "stream_options": {"include_usage": True}}
    events = sse(client.post("/chat/completions", json=req).text)
    assert len(events) == 1 + 3 + 1 + 1 + 1
    *chunks, usage, done = events
    assert done == "[DONE]" and all(c["usage"] is None for c in chunks)
    assert usage["choices"] == [] and usage["usage"]["completion_tokens"] == 3
    assert usage["usage"]["total_tokens"] == usage["usage"]["prompt_tokens"] + 3
    quiet = sse(client.post("/chat/completions", json=req | {"fake": {"no_usage": True}}).text)
    assert len(quiet) == 1 + 3 + 1 + 1 and all("usage" not in c for c in quiet[:-1])


@pytest.mark.parametrize(
    ("delta", "read"),
    [
        ("reasoning", lambda d: d["reasoning_content"]),
        ("tool_calls", lambda d: d["tool_calls"][0]["function"]["arguments"]),
    ],
)
def test_stream_deltas_of_other_kinds(client: httpx.Client, delta: str, read: Any) -> None:
    body = CHAT | {"stream": True, "fake": {"tokens": 2, "delta": delta, "no_usage": True}}

    events = sse(client.post("/chat/completions", json=body).text)

    assert [read(c["choices"][0]["delta"]) for c in events[1:3]] == ["tok0", " tok1"]
    assert all("usage" not in c for c in events[:-1])


def test_padding_makes_answers_and_events_large(client: httpx.Client) -> None:
    plain = client.post("/chat/completions", json=CHAT | {"fake": {"pad_bytes": 5000}})
    streamed = client.post(
        "/chat/completions", json=CHAT | {"stream": True, "fake": {"pad_bytes": 5000}}
    )

    assert len(plain.json()["padding"]) == 5000
    assert len(sse(streamed.text)[1]["padding"]) == 5000


def test_legacy_completions(client: httpx.Client) -> None:
    body = client.post(
        "/completions", json={"model": "m", "prompt": "one two three", "max_tokens": 2}
    ).json()
    assert body["object"] == "text_completion" and body["choices"][0]["text"] == "tok0 tok1"
    assert body["usage"]["prompt_tokens"] == 3
    events = sse(
        client.post(
            "/completions",
            json={"model": "m", "prompt": "x", "stream": True, "fake": {"tokens": 2}},
        ).text
    )
    assert [e["choices"][0]["text"] for e in events[:-1]] == ["tok0", " tok1", ""]


@pytest.mark.parametrize("how", ["header", "body"])
def test_status_injection(client: httpx.Client, how: str) -> None:
    headers = {"x-fake-status": "503", "x-fake-retry-after": "2"} if how == "header" else {}
    req = CHAT if how == "header" else CHAT | {"fake": {"status": 503, "retry_after": 2}}
    r = client.post("/chat/completions", json=req, headers=headers)
    assert r.status_code == 503 and r.headers["retry-after"] == "2"
    assert r.json()["error"]["type"] == "server_error" and "message" in r.json()["error"]


def test_raw_error_body_and_stream_options_rejection(client: httpx.Client) -> None:
    r = client.post("/chat/completions", json=CHAT | {"fake": {"status": 502, "body": "not json"}})
    assert r.status_code == 502 and r.text == "not json"
    req = CHAT | {
        "stream": True,
        "stream_options": {"include_usage": True},
        "fake": {"reject_stream_options": True},
    }
    assert client.post("/chat/completions", json=req).status_code == 400
    for bad in (b"{nope", b'{"messages": []}', b'{"model": "m", "fake": {"tokens": "x"}}'):
        r = client.post("/chat/completions", content=bad)
        assert r.status_code == 400 and r.json()["error"]["type"] == "invalid_request_error"


def test_drop_after_closes_mid_stream(server: FakeModelServerThread, client: httpx.Client) -> None:
    received = []
    with pytest.raises(httpx.RemoteProtocolError):
        with client.stream(
            "POST",
            "/chat/completions",
            json=CHAT | {"stream": True},
            headers={"x-fake-drop-after": "3"},
        ) as r:
            for line in r.iter_lines():
                received.append(line)
    events = sse("\n\n".join(received))
    assert "[DONE]" not in events and content(events) == "tok0 tok1 tok2"
    rec = server.requests[-1]
    wait_for(lambda: rec.completed is False)
    assert rec.chunks_sent == 3


def test_first_byte_delay(server: FakeModelServerThread, client: httpx.Client) -> None:
    began = time.monotonic()
    r = client.post("/chat/completions", json=CHAT, headers={"x-fake-first-byte-delay-ms": "150"})
    assert r.status_code == 200 and time.monotonic() - began >= 0.15
    began = time.monotonic()
    with pytest.raises(httpx.ReadTimeout):
        client.post(
            "/chat/completions", json=CHAT | {"fake": {"first_byte_delay_ms": 1000}}, timeout=0.1
        )
    assert time.monotonic() - began < 0.5
    rec = server.requests[-1]
    wait_for(
        lambda: rec.completed is False
    )  # the timed-out client's disconnect cancels the handler
    assert rec.status is None


def test_client_disconnect_is_recorded(server: FakeModelServerThread, client: httpx.Client) -> None:
    req = CHAT | {"stream": True, "fake": {"tokens": 200, "delay_ms": 10}}
    with client.stream("POST", "/chat/completions", json=req) as r:
        lines = r.iter_lines()
        while "tok1" not in next(lines):
            pass
    rec = server.requests[-1]
    wait_for(lambda: rec.completed is False)
    assert 2 <= rec.chunks_sent < 200
    client.post("/chat/completions", json=CHAT | {"stream": True, "fake": {"tokens": 2}})
    # The server marks a stream complete after its last write, which the client may see first.
    wait_for(lambda: server.requests[-1].completed is True)
    assert server.requests[-1].chunks_sent == 2


def test_embeddings(client: httpx.Client) -> None:
    one = client.post("/embeddings", json={"model": "emb", "input": "alpha beta"}).json()
    assert one["object"] == "list" and one["model"] == "emb"
    assert one["data"][0]["object"] == "embedding" and one["data"][0]["index"] == 0
    assert one["usage"] == {"prompt_tokens": 2, "total_tokens": 2}
    many = client.post(
        "/embeddings", json={"model": "emb", "input": ["alpha beta", "c"], "dimensions": 4}
    ).json()
    assert [d["index"] for d in many["data"]] == [0, 1] and len(many["data"][1]["embedding"]) == 4
    assert many["data"][0]["embedding"] != many["data"][1]["embedding"]
    assert many["usage"]["prompt_tokens"] == 3


def test_recording_models_and_health(server: FakeModelServerThread, client: httpx.Client) -> None:
    before = time.monotonic()
    client.post(
        "/chat/completions", json=CHAT, headers={"Authorization": "Bearer sk-up", "X-Extra": "1"}
    )
    rec = server.requests[-1]
    assert (
        isinstance(rec, RecordedRequest)
        and rec.method == "POST"
        and rec.path == "/v1/chat/completions"
    )
    assert rec.headers["authorization"] == "Bearer sk-up" and rec.headers["x-extra"] == "1"
    assert rec.json == CHAT and json.loads(rec.raw) == CHAT and rec.received_at >= before
    assert rec.status == 200 and rec.completed is True
    models = client.get("/models").json()
    assert models["object"] == "list" and models["data"][0]["object"] == "model"
    assert httpx.get(server.base_url + "/healthz").status_code == 200
    assert len(server.requests) == 2
    server.clear()
    assert server.requests == []


def test_async_api_api_key_and_no_record() -> None:
    async def scenario() -> None:
        srv = await start(api_key="sk-up", record=False, tokens=2)
        try:
            async with httpx.AsyncClient(base_url=srv.url) as c:
                denied = await c.post("/chat/completions", json=CHAT)
                assert (
                    denied.status_code == 401
                    and denied.json()["error"]["code"] == "invalid_api_key"
                )
                ok = await c.post(
                    "/chat/completions", json=CHAT, headers={"Authorization": "Bearer sk-up"}
                )
                assert ok.json()["usage"]["completion_tokens"] == 2
            assert srv.url == f"http://127.0.0.1:{srv.port}/v1" and srv.requests == []
        finally:
            await srv.close()

    asyncio.run(scenario())


def test_cli_prints_address_and_serves() -> None:
    root = Path(__file__).resolve().parents[2]
    cmd = [
        sys.executable,
        "-m",
        "tests.fakes.model_server",
        "--port",
        "0",
        "--tokens",
        "3",
        "--no-record",
    ]
    proc = subprocess.Popen(
        cmd, cwd=root, stdout=subprocess.PIPE, text=True, env=os.environ | {"PYTHONPATH": str(root)}
    )
    try:
        assert proc.stdout is not None
        ready, _, _ = select.select([proc.stdout], [], [], 5)
        line = proc.stdout.readline().strip() if ready else ""
        assert line.startswith("fake model server listening on http://127.0.0.1:")
        base = line.rsplit(" ", 1)[1]
        body = httpx.post(base + "/v1/chat/completions", json=CHAT, timeout=5).json()
        assert body["usage"]["completion_tokens"] == 3
    finally:
        proc.terminate()
        assert proc.wait(timeout=5) == 0


def test_choices_prompts_and_best_of_are_produced_and_billed(client: httpx.Client) -> None:
    body = {"model": "m", "prompt": ["a b", "c"], "n": 2, "best_of": 3, "max_tokens": 4}

    answer = client.post("/completions", json=body).json()

    assert [choice["index"] for choice in answer["choices"]] == [0, 1, 2, 3]
    assert answer["usage"] == {
        "prompt_tokens": 3,
        "completion_tokens": 2 * 3 * 4,
        "total_tokens": 27,
        "prompt_tokens_details": {"cached_tokens": 0},
    }


def test_caps_are_read_like_vllm_reads_them(client: httpx.Client) -> None:
    def produced(extra: dict[str, Any]) -> int:
        answer = client.post("/chat/completions", json=CHAT | extra).json()
        return int(answer["usage"]["completion_tokens"])

    assert produced({"max_completion_tokens": 0, "max_tokens": 5}) == 5
    assert produced({"max_tokens": "6"}) == 6
    assert produced({"max_tokens": 7.0}) == 7


def test_answer_tokens_set_the_length_and_the_cap_cuts_it() -> None:
    with FakeModelServerThread(answer_tokens=5) as fake, httpx.Client(base_url=fake.url) as http:
        long = http.post("/chat/completions", json=CHAT).json()
        capped = http.post("/chat/completions", json=CHAT | {"max_tokens": 3}).json()
        streamed = http.post(
            "/chat/completions", json=CHAT | {"n": 2, "max_tokens": 9, "stream": True}
        )

    assert long["usage"]["completion_tokens"] == 5
    assert capped["usage"]["completion_tokens"] == 3
    assert streamed.text.count('"content":"tok') + streamed.text.count('"content":" tok') == 10


def test_responses_answers_with_output_text_and_usage(client: httpx.Client) -> None:
    body = {"model": "up-model", "input": "hello big world", "max_output_tokens": 2}

    answer = client.post("/responses", json=body).json()

    assert answer["object"] == "response" and answer["model"] == "up-model"
    assert answer["status"] == "incomplete"
    assert answer["output"][0]["content"][0]["text"] == "tok0 tok1"
    assert answer["usage"]["input_tokens"] == 3 and answer["usage"]["output_tokens"] == 2


def test_responses_streams_typed_events_ending_with_the_completed_response(
    client: httpx.Client,
) -> None:
    body = {"model": "up-model", "input": "hi", "stream": True, "fake": {"tokens": 3}}

    text = client.post("/responses", json=body).text

    events = [json.loads(line[6:]) for line in text.splitlines() if line.startswith("data: ")]
    assert "event: response.created\n" in text and "[DONE]" not in text
    assert [e["sequence_number"] for e in events] == list(range(len(events)))
    deltas = [e["delta"] for e in events if e["type"] == "response.output_text.delta"]
    assert "".join(deltas) == "tok0 tok1 tok2"
    assert events[-1]["type"] == "response.completed"
    assert events[-1]["response"]["usage"]["output_tokens"] == 3


def test_responses_without_usage_report_none(client: httpx.Client) -> None:
    body = {"model": "up-model", "input": "hi", "fake": {"no_usage": True}}

    assert client.post("/responses", json=body).json()["usage"] is None
