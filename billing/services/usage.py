"""The inference path's writer: a request's usage record, made durable in one Redis step with the
end of its in-flight note; an event that cannot be stored at all is parked.

Routing imports this module on every gateway worker, so it imports only what recording needs.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import math
import time
from dataclasses import dataclass
from typing import Any

import orjson
from asgiref.sync import sync_to_async
from redis.exceptions import NoScriptError, RedisError

from billing.sanitize import text_clean
from billing.services.usage_store import usage_events_store_direct
from gateway_project.kernel.deadline import deadline
from gateway_project.kernel.ids import new_ulid
from gateway_project.kernel.redis_wire import command_bulk, command_pack, command_run

USAGE_STREAM = "gw:usage"
# A request reaped from the in-flight journal (its worker's late event is not added).
REAPED_PREFIX = "gw:reaped:"
DEAD_LETTER_STREAM = "gw:usage:dead"
# Billing numbers every node's /metrics serves (a Redis hash: metric name -> value).
BILLING_METRICS_KEY = "gw:billing:metrics"
DEAD_LETTERS_METRIC = "gateway_usage_dead_letters_total"
QUARANTINED_EVENTS_METRIC = "gateway_billing_quarantined_events"
QUARANTINED_DELIVERIES_METRIC = "gateway_billing_quarantined_deliveries"
# Field prefix of the webhook attempt counters, one field per outcome ("...:succeeded").
WEBHOOK_DELIVERIES_METRIC = "gateway_webhook_deliveries_total"
logger = logging.getLogger("billing.usage")


@dataclass(frozen=True, slots=True)
class UsageRecord:
    """One request's usage, as billed: everything its usage event says.

    `idempotency_key` is drawn once, when the request is admitted (`usage_event_key`), and travels
    in its in-flight note, so a reaper's event for it carries the same key. `timestamp` is when the
    event is recorded: the end of the request, its usage known (a reaper's: when it reaped it)."""

    request_id: str
    idempotency_key: str
    timestamp: str
    metadata: dict[str, Any]
    slug: str
    external_id: str
    key_prefix: str
    group_id: str
    workspace_id: str
    status: str  # completed | cancelled
    input_tokens: int
    output_tokens: int
    cached_input_tokens: int
    estimated: bool
    cost: dict[str, str] | None  # {"currency", "amount"} for a priced endpoint
    http_status: int
    target: str
    total_ms: float
    upstream_ms: float
    first_byte_ms: float | None

    def event(self) -> dict[str, Any]:
        """The usage event (camelCase, as webhooks and the events API show it)."""
        event: dict[str, Any] = {
            "idempotencyKey": self.idempotency_key,
            "timestamp": self.timestamp,
            "requestId": self.request_id,
            "requestMetadata": self.metadata,
            "modelSlug": self.slug,
            "externalCustomerId": self.external_id,
            "externalEntityId": self.external_id,
            "apiKeyPrefix": self.key_prefix,
            "groupId": self.group_id,
            "status": self.status,
            "tokens": {
                "inputTokens": self.input_tokens,
                "outputTokens": self.output_tokens,
                "cachedInputTokens": self.cached_input_tokens,
            },
        }
        if self.cost is not None:
            event["cost"] = self.cost
        event |= {
            "workspaceId": self.workspace_id,
            "usageEstimated": self.estimated,
            "httpStatus": self.http_status,
            "target": self.target,
            "totalMs": round(self.total_ms, 3),
            "upstreamMs": round(self.upstream_ms, 3),
            "firstByteMs": None if self.first_byte_ms is None else round(self.first_byte_ms, 3),
        }
        return event


def usage_event_key() -> str:
    """A new usage event's idempotency key (a ULID)."""
    return new_ulid()


# The last whole second a timestamp was written for, and its text up to the seconds.
_second: tuple[int, str] = (-1, "")


def usage_timestamp(now: float | None = None) -> str:
    """`now` (default: the clock), as a usage event's timestamp: RFC 3339 UTC, milliseconds
    (truncated, as datetime.isoformat writes them), 'Z'."""
    global _second
    if now is None:
        now = time.time()
    whole = int(now)
    second = _second  # one read: another thread may replace it
    if second[0] != whole:
        second = _second = (whole, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(whole)))
    return f"{second[1]}.{int((now - whole) * 1000):03d}Z"


# KEYS: the usage stream, the in-flight journal hash, the request's reaped mark. ARGV: event JSON,
# the journal field ("" for none), "1" when the event is owed only by whoever removes the note (a
# reaper). A reaper that removes the note marks the request reaped (a day); a worker whose written
# note is gone and marked adds nothing. So a reaper and a late worker, or two reapers, never both
# add one; a note lost with Redis (no mark) still lets its worker add its event. Returns 1 when
# added.
_RECORD_SCRIPT = """
if ARGV[2] ~= '' then
  if redis.call('HDEL', KEYS[2], ARGV[2]) == 0 then
    if ARGV[3] == '1' or redis.call('EXISTS', KEYS[3]) == 1 then
      return 0
    end
  elseif ARGV[3] == '1' then
    redis.call('SET', KEYS[3], '1', 'EX', 86400)
  end
end
redis.call('XADD', KEYS[1], '*', 'e', ARGV[1])
return 1
"""
_RECORD_SHA = hashlib.sha1(_RECORD_SCRIPT.encode()).hexdigest()
_EVALSHA = (command_bulk("EVALSHA"),)


def _payload(event: dict[str, Any]) -> bytes:
    """The event's JSON. orjson writes NaN and infinities as null without a word, so metadata
    holding one goes through the standard library, which keeps them for ingest to clean and note."""
    if _has_non_finite(event.get("requestMetadata")):
        return json.dumps(event, separators=(",", ":")).encode()
    try:
        return orjson.dumps(event)
    except TypeError:  # an integer beyond 64 bits in the metadata
        return json.dumps(event, separators=(",", ":")).encode()


def _has_non_finite(value: Any) -> bool:
    if isinstance(value, float):
        return not math.isfinite(value)
    if isinstance(value, dict):
        return any(_has_non_finite(item) for item in value.values())
    if isinstance(value, list):
        return any(_has_non_finite(item) for item in value)
    return False


@dataclass(frozen=True, slots=True)
class ScriptCall:
    """Another Lua script the record's round trip carries (the limits' settle): its text, SHA1,
    keys and arguments."""

    script: str
    sha: str
    keys: tuple[str, ...]
    args: tuple[Any, ...]


async def usage_record_write(
    *,
    client: Any,
    record: UsageRecord,
    timeout: float,
    note: tuple[str, str] | None = None,
    also: ScriptCall | None = None,
) -> bool:
    """Make one request's usage record durable (see usage_event_record); `also` runs on the same
    server in the same round trip. True when `also` ran (False: the caller retries it).

    `timeout` bounds the Redis step as a whole, so `client` needs no per-command timeout of its
    own; past it the event is inserted directly. redis-py closes a connection whose read or write
    is cut short, so a late reply never reaches the next command drawn from the pool."""
    event = record.event()
    unanswered = ConnectionError("the usage stream's Redis did not answer")
    replies: list[Any] = [unanswered, unanswered if also is not None else None]
    failure: BaseException | None = None
    try:
        async with deadline(timeout):
            await _record_step(client, replies, payload=_payload(event), note=note, also=also)
    except (RedisError, OSError) as error:  # OSError: the TimeoutError too
        failure = error
    recorded, ran = replies
    if isinstance(recorded, Exception):
        cause = failure or recorded
        await _record_direct(client=client, event=event, note=note, timeout=timeout, error=cause)
    return not isinstance(ran, Exception)


async def _record_step(
    client: Any,
    replies: list[Any],
    *,
    payload: bytes,
    note: tuple[str, str] | None,
    also: ScriptCall | None,
) -> None:
    """The record's round trip; `replies` gets the record's and `also`'s reply as each is known
    (an exception for one that failed), so a step cut short keeps what it learnt."""
    if also is None:
        await _event_add(client, payload=payload, note=note)
        replies[0] = 1
        return
    script, sha = _joint_script(also)
    record = _record_args(payload, note, claim=False)[1:]  # its 3 keys, then its 3 arguments
    keys, args = (*record[:3], *also.keys), (*record[3:], *also.args)
    command = command_pack(sha, len(keys), *keys, *args, packed=_EVALSHA)
    try:
        reply = await command_run(client, command)
    except NoScriptError:
        # First use on this server, or after a restart / SCRIPT FLUSH / failover.
        await client.script_load(script)
        reply = await command_run(client, command)
    replies[0] = reply[0]
    replies[1] = reply[1] if reply[1] == 1 else RedisError(f"settle failed: {reply[2]!r}")


# The record script and another script (the limits' settle) as one: the other runs in a
# protected call, so its failure neither undoes nor hides the record.
_JOINT_SCRIPT = """
local function record(KEYS, ARGV)
%s
end
local function also(KEYS, ARGV)
%s
end
local function rest(list)
  return {unpack(list, 4)}
end
local recorded = record({KEYS[1], KEYS[2], KEYS[3]}, {ARGV[1], ARGV[2], ARGV[3]})
local ok, reply = pcall(also, rest(KEYS), rest(ARGV))
if ok then return {recorded, 1, ''} end
return {recorded, 0, tostring(reply)}
"""
_joint_scripts: dict[str, tuple[str, str]] = {}


def _joint_script(also: ScriptCall) -> tuple[str, str]:
    """The record script joined with `also`'s (text and SHA1), built once per script."""
    joint = _joint_scripts.get(also.sha)
    if joint is None:
        text = _JOINT_SCRIPT % (_RECORD_SCRIPT, also.script)
        joint = _joint_scripts[also.sha] = (text, hashlib.sha1(text.encode()).hexdigest())
    return joint


def _record_args(payload: bytes, note: tuple[str, str] | None, *, claim: bool) -> tuple[Any, ...]:
    hash_key, field = note if note is not None else (USAGE_STREAM, "")
    mark = REAPED_PREFIX + field if field else USAGE_STREAM
    return (3, USAGE_STREAM, hash_key, mark, payload, field, "1" if claim else "0")


async def usage_event_record(
    *, client: Any, event: dict[str, Any], note: tuple[str, str] | None = None
) -> None:
    """Make one usage event durable: XADD to the usage stream, or a DB insert if Redis fails.

    `note` (hash key, field) is the request's in-flight journal note, removed in the same step.
    """
    try:
        await _event_add(client, payload=_payload(event), note=note)
    except (RedisError, OSError) as error:
        await _record_direct(client=client, event=event, note=note, timeout=None, error=error)


async def _event_add(client: Any, *, payload: bytes, note: tuple[str, str] | None) -> None:
    if note is None:
        await client.xadd(USAGE_STREAM, {"e": payload})
        return
    command = command_pack(_RECORD_SHA, *_record_args(payload, note, claim=False), packed=_EVALSHA)
    try:
        await command_run(client, command)
    except NoScriptError:
        await client.script_load(_RECORD_SCRIPT)
        await command_run(client, command)


async def _record_direct(
    *,
    client: Any,
    event: dict[str, Any],
    note: tuple[str, str] | None,
    timeout: float | None,
    error: BaseException,
) -> None:
    logger.warning("usage stream unavailable; inserting directly", exc_info=error)
    await sync_to_async(usage_events_store_direct, thread_sensitive=False)(events=[event])
    if note is not None:
        # Stored: the note may go (if it stays, a reaper's event for it is a duplicate
        # request id, which ingest drops).
        with contextlib.suppress(RedisError, OSError):
            async with asyncio.timeout(timeout):
                await client.hdel(*note)


def usage_record_claim(*, client: Any, record: UsageRecord, note: tuple[str, str]) -> bool:
    """Record the usage of a request whose worker died, only if its note is still there (sync
    client; the same step as usage_event_record). True when this call recorded it."""
    args = _record_args(_payload(record.event()), note, claim=True)
    try:
        return bool(client.evalsha(_RECORD_SHA, *args))
    except NoScriptError:
        client.script_load(_RECORD_SCRIPT)
        return bool(client.evalsha(_RECORD_SHA, *args))


def usage_dead_letter_park(*, client: Any, raw: bytes, error: str) -> None:
    """Keep a usage event that cannot be stored at all in the dead-letter stream, with its error,
    and count it for /metrics."""
    error = text_clean(error)[:500]
    logger.error("usage event parked in %s: %s", DEAD_LETTER_STREAM, error)
    pipe = client.pipeline(transaction=False)
    pipe.xadd(DEAD_LETTER_STREAM, {"e": raw, "error": error})
    pipe.hincrby(BILLING_METRICS_KEY, DEAD_LETTERS_METRIC, 1)
    pipe.execute()
