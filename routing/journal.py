"""The in-flight journal: no billable request is lost with the worker that served it.

Every request that goes upstream is noted in one Redis hash (`gw:inflight`, field = request id)
while it runs. Notes are buffered per worker and written in one HSET every FLUSH_EVERY seconds, so
a request that ends sooner (most JSON calls) never touches Redis for its note; a note that was
written is deleted by the usage event's XADD in the same Lua step. Each gateway worker refreshes a
heartbeat key every HEARTBEAT_EVERY seconds. What a SIGKILL can lose is the requests that started
within the last FLUSH_EVERY seconds. A worker that dies mid-request (SIGKILL,
OOM kill, a node lost) leaves notes behind whose heartbeat has expired: `journal_reap` (Celery
beat) turns each into a `cancelled` usage event with estimated tokens (prompt bytes / 4, no
completion tokens: what was streamed died with the worker) and settles the request's TOKEN
reservations to that estimate, exactly as a client disconnect would have.

A worker is declared gone only after its heartbeat has been missing for MISSING_GRACE seconds
across two reaper passes, so a Redis restart that loses the heartbeat keys (and not the hash) reaps
nothing. Reaping is idempotent: the note's HDEL and the event's XADD are one Lua step; a reaper
adds an event only if it removed the note, and leaves a mark (a day) that stops a late worker whose
note it took from adding its own, so one request puts one event in the stream. The reaped event
carries the idempotency key drawn when the request was admitted (kept in the note) and the time it
was reaped.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import socket
import time
from collections.abc import Callable
from decimal import Decimal
from functools import partial
from typing import Any

from redis.exceptions import RedisError

from billing.services.usage import (
    UsageRecord,
    usage_dead_letter_park,
    usage_event_key,
    usage_record_claim,
    usage_timestamp,
)
from gateway_project.kernel.ids import new_ulid
from routing.admission import Reservation
from routing.authcache import KeyEntry
from routing.inference_request import InferenceRequest
from routing.jsonwire import json_write
from routing.limit_counters import ChargedCounter
from routing.periodic import every
from routing.pricing import Pricing, cost_micro, cost_wire, micro_ceil
from routing.sync_adjust import limits_adjust_sync
from routing.usage import Usage

logger = logging.getLogger(__name__)

INFLIGHT_KEY = "gw:inflight"
WORKER_PREFIX = "gw:worker:"
MISSING_PREFIX = "gw:worker-missing:"
HEARTBEAT_EVERY = 2.0
HEARTBEAT_TTL = 10
# How long a heartbeat must stay missing across reaper passes (a Redis restart that lost the
# heartbeat keys sees them rewritten within HEARTBEAT_EVERY).
MISSING_GRACE = 5.0

_worker: tuple[int, str] | None = None


def worker_id() -> str:
    """This process's id in the journal (host, pid and a start ULID: pids are reused)."""
    global _worker
    pid = os.getpid()
    if _worker is None or _worker[0] != pid:
        _worker = (pid, f"{socket.gethostname()}:{pid}:{new_ulid()}")
    return _worker[1]


def journal_open(request: InferenceRequest, reservation: Reservation | None) -> None:
    """Note a request that is about to go upstream (its JSON is built only if a flush needs it)."""
    journal().open(
        request.request_id,
        partial(
            journal_note,
            entry=request.entry,
            slug=request.slug,
            metadata=request.metadata,
            pricing=request.pricing,
            body_bytes=request.body_bytes,
            reservation=reservation,
            event_key=request.event_key,
        ),
    )


def journal_note(
    *,
    entry: KeyEntry,
    slug: str,
    metadata: dict[str, Any],
    pricing: Pricing | None,
    body_bytes: int,
    reservation: Reservation | None,
    event_key: str,
) -> str:
    """The note of one request: what its usage event needs, should its worker die."""
    counters = [
        [c.key, c.type, c.unit, c.threshold] for c in (reservation.counters if reservation else ())
    ]
    note: dict[str, Any] = {
        "worker": worker_id(),
        "at": time.time(),
        "idempotencyKey": event_key,
        "requestMetadata": metadata,
        "modelSlug": slug,
        "externalCustomerId": entry.external_id,
        "apiKeyPrefix": entry.key_prefix,
        "groupId": entry.group_id,
        "workspaceId": entry.workspace_id,
        "bodyBytes": body_bytes,
        "reserved": reservation.reserved_tokens if reservation else 0,
        "counters": counters,
    }
    if pricing is not None:
        note["pricing"] = _pricing_note(pricing)
        note["reservedSpend"] = reservation.reserved_spend if reservation else 0
    return json_write(note).decode()


def _pricing_note(pricing: Pricing) -> list[str]:
    return [pricing.currency, str(pricing.input), str(pricing.output), str(pricing.cached_input)]


def _pricing_read(note: dict[str, Any]) -> Pricing | None:
    raw = note.get("pricing")
    if raw is None:
        return None
    currency, fresh, output, cached = raw
    return Pricing(str(currency), Decimal(fresh), Decimal(output), Decimal(cached))


FLUSH_EVERY = 0.02


class Journal:
    """This worker's notes: buffered, written by `flush_loop`, dropped when their request ends."""

    def __init__(self) -> None:
        # Noted, not written yet; the note is serialized only if a flush finds it still running.
        self.pending: dict[str, Callable[[], str]] = {}
        self.flushing: set[str] = set()  # in the HSET being sent now
        self.ended_while_flushing: set[str] = set()
        self.written: set[str] = set()

    def open(self, request_id: str, note: Callable[[], str]) -> None:
        """Note a request that is about to go upstream (`note()` builds its JSON when needed)."""
        self.pending[request_id] = note

    def end(self, request_id: str) -> bool:
        """Forget the note; True when Redis holds it (the caller deletes it with the event)."""
        if self.pending.pop(request_id, None) is not None:
            return False
        if request_id in self.flushing:
            self.ended_while_flushing.add(request_id)  # deleted once the HSET is done
            return False
        if request_id in self.written:
            self.written.discard(request_id)
            return True
        return False

    async def flush(self, client: Any) -> None:
        """Write the pending notes in one HSET, then delete those that ended meanwhile."""
        if not self.pending:
            return
        notes, self.pending = self.pending, {}
        batch = {request_id: note() for request_id, note in notes.items()}
        self.flushing = set(batch)
        try:
            await client.hset(INFLIGHT_KEY, mapping=batch)
        except (RedisError, OSError):
            logger.warning("in-flight journal unavailable: %d notes not written", len(batch))
            self.flushing, self.ended_while_flushing = set(), set()
            return
        ended, self.ended_while_flushing = self.ended_while_flushing, set()
        self.written |= self.flushing - ended
        self.flushing = set()
        if ended:
            with contextlib.suppress(RedisError, OSError):
                await client.hdel(INFLIGHT_KEY, *ended)


_journals: dict[int, Journal] = {}


def journal() -> Journal:
    """The running loop's journal (one per worker)."""
    loop_id = id(asyncio.get_running_loop())
    found = _journals.get(loop_id)
    if found is None:
        found = _journals[loop_id] = Journal()
    return found


async def journal_close(client: Any, *, request_id: str) -> None:
    """End the note of a request that produced no usage event (refused upstream, error)."""
    if journal().end(request_id):
        try:
            await client.hdel(INFLIGHT_KEY, request_id)
        except (RedisError, OSError):
            logger.warning("in-flight note not removed", extra={"request_id": request_id})


async def flush_loop(client: Any, *, stop: asyncio.Event) -> None:
    """Write this worker's pending notes every FLUSH_EVERY seconds until `stop` is set."""
    book = journal()
    async for _ in every(stop, FLUSH_EVERY):
        await book.flush(client)
    _journals.pop(id(asyncio.get_running_loop()), None)


async def heartbeat_loop(client: Any, *, stop: asyncio.Event) -> None:
    """Refresh this worker's heartbeat until `stop` is set (it lapses HEARTBEAT_TTL s later)."""
    key = WORKER_PREFIX + worker_id()
    async for _ in every(stop, HEARTBEAT_EVERY):
        try:
            await client.set(key, "1", ex=HEARTBEAT_TTL)
        except (RedisError, OSError):
            logger.debug("heartbeat not written", exc_info=True)


def _worker_gone(client: Any, worker: str, *, now: float) -> bool:
    """True once the worker's heartbeat has been missing for MISSING_GRACE seconds."""
    if client.exists(WORKER_PREFIX + worker):
        return False
    missing = MISSING_PREFIX + worker
    client.set(missing, repr(now), nx=True, ex=24 * 3600)
    since = float(client.get(missing) or now)
    return now - since >= MISSING_GRACE


def _reaped_usage(note: dict[str, Any]) -> Usage:
    return Usage(max(1, int(note["bodyBytes"]) // 4), 0, 0, estimated=True)


def _reaped_record(request_id: str, note: dict[str, Any]) -> UsageRecord:
    usage, pricing = _reaped_usage(note), _pricing_read(note)
    return UsageRecord(
        request_id=request_id,
        # A note written before notes carried a key gets its own (its worker never wrote one).
        idempotency_key=_text(note.get("idempotencyKey")) or usage_event_key(),
        # When the request was found orphaned and recorded (its real end is unknown).
        timestamp=usage_timestamp(),
        metadata=note["requestMetadata"],
        slug=note["modelSlug"],
        external_id=note["externalCustomerId"],
        key_prefix=note["apiKeyPrefix"],
        group_id=note["groupId"],
        workspace_id=note["workspaceId"],
        status="cancelled",
        input_tokens=usage.input_tokens,
        output_tokens=0,
        cached_input_tokens=0,
        estimated=True,
        cost=cost_wire(pricing, usage) if pricing is not None else None,
        http_status=499,
        target="",
        total_ms=max(0.0, time.time() - float(note["at"])) * 1000,
        upstream_ms=0.0,
        first_byte_ms=None,
    )


def _text(value: Any) -> str:
    if value is not None and not isinstance(value, str):
        raise TypeError("the note's event key is not a string")
    return value or ""


def journal_reap(*, client: Any, now: float | None = None) -> int:
    """Turn the notes of dead workers into cancelled usage events; returns how many."""
    now = time.time() if now is None else now
    gone: dict[str, bool] = {}
    reaped = 0
    for raw_id, raw_note in client.hscan_iter(INFLIGHT_KEY, count=500):
        request_id = raw_id.decode() if isinstance(raw_id, bytes) else raw_id
        try:
            note = json.loads(raw_note)
            worker = note["worker"]
            if not isinstance(worker, str):
                raise TypeError("the note names no worker")
            if worker not in gone:
                gone[worker] = _worker_gone(client, worker, now=now)
            if not gone[worker]:
                continue
            record, counters = _reaped_record(request_id, note), _settled_counters(note)
            deltas = _reaped_deltas(note)
        except (KeyError, TypeError, ValueError, ArithmeticError, RecursionError) as exc:
            _note_park(client, request_id=request_id, raw_note=raw_note, exc=exc)
            continue  # one unreadable note must not stop the reaper for every other request
        if not usage_record_claim(client=client, record=record, note=(INFLIGHT_KEY, request_id)):
            continue  # recorded meanwhile by its worker or another reaper
        reaped += 1
        _settle(counters, deltas=deltas, request_id=request_id)
    if reaped:
        logger.warning("reaped %d requests of dead gateway workers %s", reaped, sorted(gone))
    return reaped


def _settled_counters(note: dict[str, Any]) -> list[ChargedCounter]:
    return [
        ChargedCounter(key=key, type=kind, unit=unit, threshold=int(threshold), cost=0)
        for key, kind, unit, threshold in note["counters"]
        if kind in ("TOKEN", "SPEND")
    ]


def _reaped_deltas(note: dict[str, Any]) -> dict[str, int]:
    """TOKEN and SPEND settle to the estimate (read before the event is recorded: a bad note is
    parked instead)."""
    usage, pricing = _reaped_usage(note), _pricing_read(note)
    spend = micro_ceil(cost_micro(pricing, usage)) if pricing is not None else 0
    return {
        "TOKEN": usage.total - int(note["reserved"]),
        "SPEND": spend - int(note.get("reservedSpend", 0)),
    }


def _note_park(client: Any, *, request_id: str, raw_note: bytes, exc: Exception) -> None:
    """An unreadable note: kept as a dead letter (counted on /metrics) and removed."""
    if client.hdel(INFLIGHT_KEY, request_id):
        usage_dead_letter_park(
            client=client,
            raw=raw_note,
            error=f"unreadable in-flight note of {request_id}: {type(exc).__name__}: {exc}",
        )


def _settle(counters: list[ChargedCounter], *, deltas: dict[str, int], request_id: str) -> None:
    counters = [counter for counter in counters if deltas[counter.type] != 0]
    if not counters:
        return
    try:
        limits_adjust_sync(counters=counters, amounts=[deltas[c.type] for c in counters])
    except (RedisError, OSError, TimeoutError):
        logger.exception(
            "reaped request's reservation not settled", extra={"request_id": request_id}
        )
