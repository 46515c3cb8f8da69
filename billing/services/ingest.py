"""Moves usage events from the Redis stream into UsageEvent, idempotently (unique request id).

Consumer-group semantics give at-least-once: an entry is acknowledged (and deleted) only after its
row is committed; entries a crashed consumer left pending are reclaimed after CLAIM_IDLE_MS, and
a consumer's own pending entries (a batch the database refused) are retried on its next run. A
replayed entry (a crash between the commit and the acknowledgement) makes no second row.

The loop overlaps its waits: a reader thread reads and prepares the next batches (Redis, parsing,
row building: no database) while this thread copies the current one into the database. The reader
never acknowledges; this thread acknowledges a batch once its transaction is committed.

An event the database refuses is stored without its metadata (noted on the row) so its tokens are
billed; only one that cannot be stored at all (no workspace, group or request id) is parked in the
dead-letter stream, and counted.
"""

from __future__ import annotations

import contextlib
import gc
import json
import logging
import os
import queue
import socket
import threading
from collections.abc import Iterator
from typing import Any, NamedTuple

import redis
from django.db import transaction
from django_redis import get_redis_connection
from redis.exceptions import ResponseError

from billing.services.usage import USAGE_STREAM, usage_dead_letter_park
from billing.services.usage_store import (
    UsageRows,
    database_down_reraise,
    usage_event_parse,
    usage_event_store_lenient,
    usage_rows_prepare,
    usage_rows_ready,
    usage_rows_store,
)

GROUP = "ingest"
BATCH = 5000
# Batches the reader may hold prepared while one is being written: read but not yet stored, they
# stay pending in the consumer group (retried by this consumer's next run, or reclaimed).
READ_AHEAD = 1
CLAIM_IDLE_MS = 30_000
logger = logging.getLogger(__name__)


class Batch(NamedTuple):
    """Stream entries read and prepared: their ids (acknowledged once `rows` are committed), the
    events (for the one-by-one retry) and their rows."""

    ids: list[bytes]
    events: list[dict[str, Any]]
    rows: list[UsageRows]


def _consumer() -> str:
    return f"{socket.gethostname()}-{os.getpid()}"


def _group_ensure(client: Any) -> None:
    try:
        client.xgroup_create(USAGE_STREAM, GROUP, id="0", mkstream=True)
    except ResponseError as exc:
        if "BUSYGROUP" not in str(exc):
            raise


def _payload(fields: Any) -> Any:
    """The event bytes of a stream entry's fields (a dict, or the raw [name, value, ...] list)."""
    if isinstance(fields, dict):
        return fields.get(b"e")
    if isinstance(fields, list):
        for i in range(0, len(fields) - 1, 2):
            if fields[i] == b"e":
                return fields[i + 1]
    return None


def _prepare(client: Any, entries: list[Any], vendor: str) -> Batch:
    """The entry ids, the events and their rows, those known clean first. An entry holding no
    readable event is parked in the dead-letter stream (and acknowledged with its batch)."""
    ids: list[bytes] = []
    clean: list[dict[str, Any]] = []
    other: list[dict[str, Any]] = []
    for entry_id, fields in entries:
        ids.append(entry_id)
        raw = _payload(fields)
        try:
            event, fast = usage_event_parse(raw) if raw is not None else (None, False)
        except (TypeError, ValueError, RecursionError) as exc:
            event, error = None, f"unreadable stream entry: {exc}"
        else:
            error = "not a JSON object" if raw is not None else "no event in the stream entry"
        if isinstance(event, dict):
            (clean if fast else other).append(event)
        else:
            usage_dead_letter_park(
                client=client, raw=raw if isinstance(raw, bytes) else b"", error=error
            )
    try:
        rows = [
            usage_rows_prepare(events=clean, clean=True, vendor=vendor),
            usage_rows_prepare(events=other, vendor=vendor),
        ]
    except Exception:  # noqa: BLE001 - an event its cleaning refuses: then each on its own
        rows = []
    return Batch(ids=ids, events=clean + other, rows=rows)


def _store(client: Any, batch: Batch) -> int:
    """Commit a batch's rows (each event on its own if the batch is refused), then acknowledge
    and delete its entries: never before the commit."""
    stored = len(batch.events)
    if batch.events:
        try:
            if not batch.rows:
                raise ValueError("an event of the batch cannot be prepared")
            with transaction.atomic():
                for rows in batch.rows:
                    usage_rows_store(rows)
        except Exception as exc:  # noqa: BLE001 - then each on its own, to find the bad one
            database_down_reraise(exc)
            stored = sum(_store_one(client, event) for event in batch.events)
    if batch.ids:
        pipe = client.pipeline(transaction=False)
        pipe.xack(USAGE_STREAM, GROUP, *batch.ids)
        pipe.xdel(USAGE_STREAM, *batch.ids)
        pipe.execute()
    return stored


def _store_one(client: Any, event: dict[str, Any]) -> bool:
    """One event on its own, so a bad one cannot block the stream; parked if it is unstorable."""
    try:
        usage_event_store_lenient(event=event)
    except Exception as exc:  # noqa: BLE001 - one bad event must not block the stream
        database_down_reraise(exc)
        raw = json.dumps(event, default=str).encode()
        usage_dead_letter_park(client=client, raw=raw, error=f"{type(exc).__name__}: {exc}")
        return False
    return True


def _raw_client(client: Any) -> Any:
    """A client on the same connections whose XREADGROUP replies stay as Redis sent them (no
    dict per entry: the reader parses thousands a batch)."""
    raw = redis.Redis(connection_pool=client.connection_pool)
    raw.set_response_callback("XREADGROUP", lambda response, **options: response)
    return raw


def _read(raw: Any, consumer: str, last: str) -> list[Any]:
    """Up to BATCH entries: new ones (`last` ">") or this consumer's pending ones after `last`."""
    reply = raw.xreadgroup(GROUP, consumer, {USAGE_STREAM: last}, count=BATCH)
    if isinstance(reply, dict):  # RESP3
        reply = list(reply.items())
    if not reply:
        return []
    return list(reply[0][1])


def _own_pending(raw: Any, consumer: str) -> Iterator[list[Any]]:
    """This consumer's unacknowledged entries, oldest first, a batch at a time."""
    last = "0"
    while entries := _read(raw, consumer, last):
        yield entries
        entry_id = entries[-1][0]
        last = entry_id.decode() if isinstance(entry_id, bytes) else str(entry_id)


def _reclaimed(client: Any, consumer: str) -> list[Any]:
    result = client.xautoclaim(USAGE_STREAM, GROUP, consumer, CLAIM_IDLE_MS, "0-0", count=BATCH)
    return list(result[1])


@contextlib.contextmanager
def _collector_paused() -> Iterator[None]:
    """No cyclic garbage collection while batches are built: their many small objects (freed by
    reference counting) would otherwise trigger full passes over the whole process."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


class _Reader(threading.Thread):
    """Reads and prepares up to `batches` batches of new entries ahead of the writer; an empty
    batch says the stream is drained, an exception is handed over as it is."""

    def __init__(self, raw: Any, consumer: str, vendor: str, batches: int) -> None:
        super().__init__(name="usage-ingest-reader", daemon=True)
        self.raw, self.consumer, self.vendor, self.batches = raw, consumer, vendor, batches
        self.ready: queue.Queue[Batch | BaseException | None] = queue.Queue(maxsize=READ_AHEAD)
        self.stopped = threading.Event()

    def run(self) -> None:
        try:
            for _ in range(self.batches):
                entries = _read(self.raw, self.consumer, ">")
                if not entries or not self._hand(_prepare(self.raw, entries, self.vendor)):
                    break
        except BaseException as exc:  # noqa: BLE001 - the writer re-raises it
            self._hand(exc)
        self._hand(None)

    def _hand(self, item: Batch | BaseException | None) -> bool:
        while not self.stopped.is_set():
            with contextlib.suppress(queue.Full):
                self.ready.put(item, timeout=0.1)
                return True
        return False

    def batches_ready(self) -> Iterator[Batch]:
        while (item := self.ready.get()) is not None:
            if isinstance(item, BaseException):
                raise item
            yield item

    def stop(self) -> None:
        """Stop reading (what it read and did not hand over stays pending) and wait for it."""
        self.stopped.set()
        self.join()


def usage_ingest(*, max_batches: int = 20) -> int:
    """Move pending stream entries into the database; returns how many events were stored."""
    client = get_redis_connection("default")
    _group_ensure(client)
    raw, vendor = _raw_client(client), usage_rows_ready()
    consumer, stored = _consumer(), 0
    with _collector_paused():
        # This consumer's own unacknowledged entries first (a batch the database refused a
        # moment ago), then other consumers' long-idle ones.
        for entries in _own_pending(raw, consumer):
            stored += _store(client, _prepare(client, entries, vendor))
        stored += _store(client, _prepare(client, _reclaimed(client, consumer), vendor))
        reader = _Reader(raw, consumer, vendor, max_batches)
        reader.start()
        try:
            for batch in reader.batches_ready():
                stored += _store(client, batch)
        finally:
            reader.stop()
    return stored
