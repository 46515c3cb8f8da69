"""Client traffic for fault tests: what every request's client saw, bursts and steady load."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import aiohttp

DONE = b"data: [DONE]\n\n"
REQUEST_TIMEOUT = 30.0  # a request still open after this long counts as a hang


@dataclass
class Outcome:
    """One request as its client saw it."""

    started: float = field(default_factory=time.monotonic)
    ended: float = 0.0
    request_id: str | None = None
    status: int | None = None  # None: no HTTP response at all
    complete: bool = False  # 200 and the whole body ([DONE] for a stream)
    code: str | None = None  # the error envelope's code
    error: str = ""  # what the client library raised (broken stream, reset, timeout)


def chat_body(*, slug: str, tokens: int, delay_ms: float = 0, stream: bool = True) -> bytes:
    """A chat request the fake upstream answers with `tokens` tokens, `delay_ms` apart."""
    body = {
        "model": slug,
        "messages": [{"role": "user", "content": "tell me about faults"}],
        "max_tokens": tokens,
        "stream": stream,
        "fake": {"delay_ms": delay_ms},
    }
    return json.dumps(body).encode()


def reserved_tokens(body: bytes) -> int:
    """What admission reserves for `body` (bytes / 4 + max_tokens)."""
    return len(body) // 4 + int(json.loads(body)["max_tokens"])


def _envelope_code(data: bytes) -> str | None:
    try:
        error = json.loads(data).get("error")
    except (ValueError, AttributeError):
        return None
    return error.get("code") if isinstance(error, dict) else None


async def call(
    session: aiohttp.ClientSession,
    *,
    base: str,
    key: str,
    body: bytes,
    on_head: Callable[[Outcome], None] | None = None,
) -> Outcome:
    """POST /v1/chat/completions and read the whole answer; never raises."""
    out = Outcome()
    headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
    try:
        async with asyncio.timeout(REQUEST_TIMEOUT):
            async with session.post(f"{base}/v1/chat/completions", data=body, headers=headers) as r:
                out.status, out.request_id = r.status, r.headers.get("x-request-id")
                if on_head is not None:
                    on_head(out)
                data = await r.read()
        streamed = b'"stream": true' in body
        out.complete = r.status == 200 and (data.endswith(DONE) if streamed else bool(data))
        out.code = None if r.status == 200 else _envelope_code(data)
    except TimeoutError:
        out.error = "timeout (hang)"
    except (aiohttp.ClientError, OSError) as exc:
        out.error = type(exc).__name__
    out.ended = time.monotonic()
    return out


def new_session() -> aiohttp.ClientSession:
    """A client session without a connection cap (one connection per concurrent request)."""
    return aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0, force_close=True))


async def burst(*, base: str, key: str, bodies: list[bytes]) -> list[Outcome]:
    """Send every body at once and wait for all answers."""
    async with new_session() as session:
        return list(
            await asyncio.gather(*(call(session, base=base, key=key, body=b) for b in bodies))
        )


class Load:
    """`concurrency` clients sending `body` back to back on a thread, until stopped."""

    def __init__(self, *, base: str, key: str, body: bytes, concurrency: int) -> None:
        self.base, self.key, self.body, self.concurrency = base, key, body, concurrency
        self.outcomes: list[Outcome] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=lambda: asyncio.run(self._run()), daemon=True)

    async def _client(self, session: aiohttp.ClientSession) -> None:
        while not self._stop.is_set():
            self.outcomes.append(await call(session, base=self.base, key=self.key, body=self.body))

    async def _run(self) -> None:
        async with new_session() as session:
            await asyncio.gather(*(self._client(session) for _ in range(self.concurrency)))

    def start(self) -> Load:
        """Start sending."""
        self._thread.start()
        return self

    def stop(self) -> list[Outcome]:
        """Stop, let the requests in flight finish, and return every outcome."""
        self._stop.set()
        self._thread.join(timeout=REQUEST_TIMEOUT + 10)
        assert not self._thread.is_alive(), "load generator did not stop"
        return list(self.outcomes)

    def count(self, predicate: Callable[[Outcome], bool], *, since: float = 0.0) -> int:
        """Finished requests started after `since` that match."""
        return sum(1 for o in list(self.outcomes) if o.started >= since and predicate(o))


def summary(outcomes: list[Outcome]) -> dict[str, int]:
    """Counts by what the client saw: complete, status/code, or the client error."""
    counts: dict[str, int] = {}
    for o in outcomes:
        label = "complete" if o.complete else (o.error or f"{o.status} {o.code}")
        if o.status == 200 and not o.complete:
            label = f"200 then {o.error or 'truncated'}"
        counts[label] = counts.get(label, 0) + 1
    return counts
