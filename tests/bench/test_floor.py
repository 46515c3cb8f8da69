"""The floor systems of `make bench`, started as the bench starts them, against a real fake upstream
and the test Redis."""

from __future__ import annotations

import json
from collections.abc import Iterator

import httpx
import pytest
import redis

from bench.floor import LIMIT_KEYS, LIMIT_SCRIPT, USAGE_STREAM, floor_start, usage_entries_count
from bench.peers import System, proc_stop
from tests.fakes.model_server import FakeModelServerThread

pytestmark = pytest.mark.slow  # each test starts a two-worker uvicorn


@pytest.fixture
def upstreams() -> Iterator[tuple[FakeModelServerThread, FakeModelServerThread]]:
    """A fast fake upstream and a slow one (50 ms between streamed chunks)."""
    with FakeModelServerThread() as fast, FakeModelServerThread(delay_ms=50) as slow:
        yield fast, slow


@pytest.fixture
def start_floor(tmp_path, upstreams):
    """Start `floor` or `floor_redis` (given a Redis URL); every one started is stopped."""
    started: list[System] = []
    fast, slow = upstreams

    def start(name: str, redis_url: str | None = None) -> System:
        system = floor_start(
            name, logs=tmp_path, fast_port=fast.port, slow_port=slow.port, redis_url=redis_url
        )
        started.append(system)
        return system

    yield start
    for system in started:
        proc_stop(system.procs[0])


def _body(*, stream: bool) -> bytes:
    messages = [{"role": "user", "content": "hello floor"}]
    return json.dumps(
        {"model": "fake-model", "max_tokens": 20, "stream": stream, "messages": messages}
    ).encode()


def test_floor_forwards_the_request_body_untouched_and_returns_the_completion(
    start_floor, upstreams
):
    fast, _ = upstreams
    system = start_floor("floor")
    body = _body(stream=False)

    response = httpx.post(system.url, content=body, timeout=10)

    assert response.status_code == 200
    assert response.json()["choices"][0]["message"]["content"]
    assert response.json()["usage"]["completion_tokens"] == 20
    [received] = fast.requests
    assert received.path == "/v1/chat/completions"
    assert received.raw == body


def test_floor_relays_each_chunk_while_the_upstream_is_still_streaming(start_floor, upstreams):
    _, slow = upstreams
    system = start_floor("floor")

    with httpx.stream(
        "POST", system.target(slow=True)[0], content=_body(stream=True), timeout=10
    ) as response:
        chunks = response.iter_bytes()
        first = next(chunks)
        sent_by_then = slow.requests[0].chunks_sent
        rest = b"".join(chunks)
    direct = httpx.post(f"{slow.url}/chat/completions", content=_body(stream=True), timeout=10)

    assert response.headers["content-type"].startswith("text/event-stream")
    assert first.startswith(b"data: ")
    assert sent_by_then < 20  # the upstream was still generating when the client got its first
    relayed = (first + rest).split(b"\n\n")
    assert len(relayed) == len(direct.content.split(b"\n\n"))
    assert relayed[-2:] == [b"data: [DONE]", b""]


def test_floor_answers_404_for_a_path_that_names_no_upstream(start_floor, upstreams):
    fast, _ = upstreams
    system = start_floor("floor")
    url = system.url.replace("/fast/", "/elsewhere/")

    response = httpx.post(url, content=_body(stream=False), timeout=10)

    assert response.status_code == 404
    assert fast.requests == []


def test_floor_redis_runs_the_limit_script_and_records_the_usage_entry_before_the_last_byte(
    start_floor, redis_server
):
    system = start_floor("floor_redis", redis_url=redis_server)
    client = redis.Redis.from_url(redis_server)

    with httpx.stream("POST", system.url, content=_body(stream=True), timeout=10) as response:
        received = b"".join(response.iter_bytes())
        entries = client.xrange(USAGE_STREAM)  # read before the connection is released

    assert received.endswith(b"data: [DONE]\n\n")
    [(_, entry)] = entries
    assert entry[b"status"] == b"200"
    assert int(entry[b"bytes"]) == len(received)
    assert usage_entries_count(system) == 1


def test_floor_redis_runs_its_limit_script_before_the_upstream_call(
    start_floor, upstreams, redis_server
):
    fast, _ = upstreams
    system = start_floor("floor_redis", redis_url=redis_server)
    client = redis.Redis.from_url(redis_server)
    seconds, micros = client.time()
    spent = seconds * 1000 + micros / 1000 + 120_000  # two minutes of requests ahead
    client.set(LIMIT_KEYS[0], f"{spent:.3f}", px=120_000)

    response = httpx.post(system.url, content=_body(stream=False), timeout=10)

    assert response.status_code == 429
    assert fast.requests == []
    assert usage_entries_count(system) == 0


def test_floor_redis_records_one_usage_entry_per_request(start_floor, redis_server):
    system = start_floor("floor_redis", redis_url=redis_server)

    for stream in (False, True, False):
        httpx.post(system.url, content=_body(stream=stream), timeout=10).raise_for_status()

    assert usage_entries_count(system) == 3
    assert usage_entries_count(start_floor("floor")) is None


def test_the_limit_script_refuses_past_a_limit_and_then_writes_no_limit(redis_server):
    client = redis.Redis.from_url(redis_server)
    script = client.register_script(LIMIT_SCRIPT)
    keys = ["floor:{t}:wide", "floor:{t}:one-a-minute"]
    args = [1, 1.0, 60_000, 60_000.0, 60_000]  # cost; 60,000 a minute; then one a minute

    first = script(keys=keys, args=args)
    wide_after_first = client.get(keys[0])
    second = script(keys=keys, args=args)

    assert first == [1, 0]
    assert second == [0, 2]  # refused by the second limit...
    assert client.get(keys[0]) == wide_after_first  # ...so the first one is not charged
    assert 0 < client.pttl(keys[1]) <= 60_001
