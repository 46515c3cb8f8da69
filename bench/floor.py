"""The floor systems of `make bench`: what a Python proxy costs before any product logic.

`floor` is a raw ASGI app on uvicorn (uvloop, httptools; as many workers as our gateway) that reads
the request body and forwards it with one pooled aiohttp session per worker, streaming the response
back as it arrives. `floor_redis` is the same plus the least Redis work the product needs per
request: one EVALSHA of a small limit script (two GCRA limits) before the upstream call, and one
XADD of a usage entry before the last byte goes to the client.

The upstream is chosen by the first path segment: POST /fast/v1/chat/completions goes to the fast
fake upstream's /v1/chat/completions. Environment, read once per worker on its first request:
BENCH_FLOOR_UPSTREAMS (JSON {"fast": base URL, "slow": base URL}) and BENCH_FLOOR_REDIS_URL
(unset or empty: the `floor` system).
"""

from __future__ import annotations

import itertools
import json
import os
import sys
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp

from bench.gateway import REDIS_URL, WORKERS
from bench.peers import HOST, System, Unavailable, free_port, http_ready, proc_spawn

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

UPSTREAMS_ENV = "BENCH_FLOOR_UPSTREAMS"
REDIS_ENV = "BENCH_FLOOR_REDIS_URL"
USAGE_STREAM = "floor:usage"
LIMIT_KEYS = ("floor:{bench}:rate", "floor:{bench}:tokens")
# (emission interval ms, period ms) per key: 1e9 requests a minute, 1e12 tokens a day, as ours.
LIMIT_ARGS = (60_000 / 1e9, 60_000, 86_400_000 / 1e12, 86_400_000)
REQUEST_COST = 1

# Every limit is checked before any is written; a TAT is stored with microsecond precision.
LIMIT_SCRIPT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + tonumber(t[2]) / 1000
local cost = tonumber(ARGV[1])
local tats = {}
for i, key in ipairs(KEYS) do
  local interval, period = tonumber(ARGV[2 * i]), tonumber(ARGV[2 * i + 1])
  local tat = math.max(tonumber(redis.call('GET', key)) or now, now) + cost * interval
  if tat - now > period then
    return {0, i}
  end
  tats[i] = tat
end
for i, key in ipairs(KEYS) do
  redis.call('SET', key, string.format('%.3f', tats[i]), 'PX', math.ceil(tats[i] - now) + 1)
end
return {1, 0}
"""

_HOP_BY_HOP = frozenset(
    (b"connection", b"keep-alive", b"transfer-encoding", b"te", b"trailer", b"upgrade")
)
_UPSTREAM_HEADERS = {"Content-Type": "application/json", "Authorization": "Bearer sk-floor"}
_NOT_FOUND = b'{"error": {"message": "unknown upstream", "type": "invalid_request_error"}}'
_LIMITED = b'{"error": {"message": "limit reached", "type": "requests"}}'
_JSON_HEADERS = [(b"content-type", b"application/json")]


@dataclass
class _Worker:
    """One worker's clients, created inside its running loop on the first request."""

    session: aiohttp.ClientSession
    upstreams: dict[str, str]
    redis: Any = None  # redis.asyncio.Redis for floor_redis
    script: Any = None  # its registered limit script (EVALSHA, EVAL once on NOSCRIPT)


_state: _Worker | None = None
_ids = itertools.count(1)


def _worker() -> _Worker:
    global _state
    if _state is None:
        connector = aiohttp.TCPConnector(limit=0, limit_per_host=0, keepalive_timeout=60)
        session = aiohttp.ClientSession(
            connector=connector,
            timeout=aiohttp.ClientTimeout(total=None, connect=10),
            auto_decompress=False,
            skip_auto_headers=("User-Agent",),
        )
        upstreams = json.loads(os.environ[UPSTREAMS_ENV])
        _state = _Worker(session, {key: url.rstrip("/") for key, url in upstreams.items()})
        url = os.environ.get(REDIS_ENV)
        if url:
            import redis.asyncio as aioredis

            pool = aioredis.BlockingConnectionPool.from_url(url, max_connections=64, timeout=5)
            _state.redis = aioredis.Redis(connection_pool=pool)
            _state.script = _state.redis.register_script(LIMIT_SCRIPT)
    return _state


async def app(scope: Scope, receive: Receive, send: Send) -> None:
    """The ASGI entry point: lifespan, /healthz, and the proxy for everything else."""
    if scope["type"] == "lifespan":
        await _lifespan(receive, send)
    elif scope["type"] == "http":
        if scope["path"] == "/healthz":
            await _answer(send, 200, b'{"ok": true}')
        else:
            await _proxy(scope, receive, send)


async def _lifespan(receive: Receive, send: Send) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            if _state is not None:
                await _state.session.close()
                if _state.redis is not None:
                    await _state.redis.aclose()
            await send({"type": "lifespan.shutdown.complete"})
            return


async def _proxy(scope: Scope, receive: Receive, send: Send) -> None:
    worker = _worker()
    upstream, _, rest = scope["path"][1:].partition("/")
    base = worker.upstreams.get(upstream)
    if base is None:
        await _answer(send, 404, _NOT_FOUND)
        return
    body = await _body(receive)
    if worker.script is not None:
        allowed, _limit = await worker.script(keys=LIMIT_KEYS, args=(REQUEST_COST, *LIMIT_ARGS))
        if not allowed:
            await _answer(send, 429, _LIMITED)
            return
    upstream_call = worker.session.post(f"{base}/{rest}", data=body, headers=_UPSTREAM_HEADERS)
    async with upstream_call as response:
        headers = [
            (name.lower(), value)
            for name, value in response.raw_headers
            if name.lower() not in _HOP_BY_HOP
        ]
        await send({"type": "http.response.start", "status": response.status, "headers": headers})
        await _relay(response, send, worker)


async def _relay(response: aiohttp.ClientResponse, send: Send, worker: _Worker) -> None:
    """Forward chunks as they arrive, holding the latest back so the XADD precedes the last byte."""
    held = b""
    sent = 0
    async for chunk in response.content.iter_any():
        if held:
            await send({"type": "http.response.body", "body": held, "more_body": True})
            sent += len(held)
        held = chunk
    if worker.redis is not None:
        entry = {"id": f"{os.getpid()}-{next(_ids)}", "status": response.status}
        await worker.redis.xadd(USAGE_STREAM, entry | {"bytes": sent + len(held)})
    await send({"type": "http.response.body", "body": held, "more_body": False})


async def _body(receive: Receive) -> bytes:
    message = await receive()
    body: bytes = message.get("body", b"")
    if not message.get("more_body"):
        return body
    parts = [body]
    while message.get("more_body"):
        message = await receive()
        parts.append(message.get("body", b""))
    return b"".join(parts)


async def _answer(send: Send, status: int, body: bytes) -> None:
    await send({"type": "http.response.start", "status": status, "headers": _JSON_HEADERS})
    await send({"type": "http.response.body", "body": body, "more_body": False})


def _redis_reset(url: str) -> str:
    """Flush the bench Redis database; Unavailable when it does not answer."""
    import redis

    try:
        client = redis.Redis.from_url(url, socket_timeout=5)
        client.flushdb()
        client.close()
    except Exception as exc:  # noqa: BLE001 - any failure: the system is not available
        raise Unavailable(f"Redis at {url} unusable: {exc}") from exc
    return url


def floor_start(
    name: str,
    *,
    logs: Path,
    fast_port: int,
    slow_port: int,
    redis_url: str | None = None,
    workers: int = WORKERS,
) -> System:
    """Start `floor` (no Redis) or `floor_redis` (`redis_url`, flushed first) under uvicorn."""
    upstreams = {"fast": f"http://{HOST}:{fast_port}", "slow": f"http://{HOST}:{slow_port}"}
    env = {**os.environ, UPSTREAMS_ENV: json.dumps(upstreams), REDIS_ENV: ""}
    notes = [f"raw ASGI app (bench/floor.py), uvicorn, {workers} workers, uvloop, httptools"]
    notes.append("one pooled aiohttp session per worker, response streamed through")
    if redis_url:
        env[REDIS_ENV] = _redis_reset(redis_url)
        notes.append(f"one EVALSHA (2 GCRA limits) and one XADD per request, Redis {redis_url}")
    port = free_port()
    proc = proc_spawn(name, floor_argv(port=port, workers=workers), logs=logs, env=env)
    try:
        http_ready(f"http://{HOST}:{port}/healthz", proc=proc, timeout=30)
    except Unavailable:
        from bench.peers import proc_stop

        proc_stop(proc)
        raise
    return System(
        name,
        f"http://{HOST}:{port}/fast/v1/chat/completions",
        slow_url=f"http://{HOST}:{port}/slow/v1/chat/completions",
        procs=[proc],
        headers=["Authorization: Bearer sk-floor"],
        notes=notes,
        env=env,
    )


def floor_argv(*, port: int, workers: int) -> list[str]:
    """The uvicorn command line of the floor app."""
    return [
        sys.executable,
        "-m",
        "uvicorn",
        "bench.floor:app",
        "--host",
        HOST,
        "--port",
        str(port),
        "--workers",
        str(workers),
        "--loop",
        "uvloop",
        "--http",
        "httptools",
        "--no-access-log",
        "--log-level",
        "warning",
    ]


def usage_entries_count(system: System) -> int | None:
    """Entries floor_redis wrote to its usage stream (None for `floor` or unreadable Redis)."""
    url = system.env.get(REDIS_ENV)
    if not url:
        return None
    try:
        import redis

        return int(redis.Redis.from_url(url, socket_timeout=5).xlen(USAGE_STREAM))
    except Exception:  # noqa: BLE001 - only informative
        return None


def floor_system(
    name: str, *, logs: Path, fast_port: int, slow_port: int, redis_url: str = REDIS_URL
) -> System:
    """`floor` or `floor_redis` as `make bench` runs them (floor_redis on the bench Redis db)."""
    return floor_start(
        name,
        logs=logs,
        fast_port=fast_port,
        slow_port=slow_port,
        redis_url=redis_url if name == "floor_redis" else None,
    )
