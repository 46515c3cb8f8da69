"""A usage event's database row: cleaned so the database can always store its tokens.

An event the database refuses is stored without its metadata (noted on the row); only one that
cannot be stored at all (no workspace, group or request id) raises.
"""

from __future__ import annotations

import functools
import hashlib
import json
import operator
import re
from collections.abc import Callable
from datetime import datetime
from decimal import Decimal
from typing import Any, NamedTuple

import orjson
from django.db import (
    DatabaseError,
    IntegrityError,
    InterfaceError,
    OperationalError,
    connection,
    connections,
    transaction,
)
from django.db.models import JSONField
from django.utils import timezone
from psycopg.errors import UniqueViolation
from psycopg.types.json import JsonbBinaryDumper
from ulid import ULID

from billing.models import EventStatus, UsageEvent
from billing.sanitize import (
    BIGINT_MAX,
    MAX_METADATA_DEPTH,
    count_clean,
    float_clean,
    metadata_sanitize,
    text_clean,
)
from groups.models import Group

_STAGE = "usage_event_stage"
_STATUSES = frozenset(EventStatus.values)
CURRENCY = re.compile(r"^[A-Z]{3}$")
AMOUNT = re.compile(r"^[0-9]{1,28}\.[0-9]{1,12}$")
# A NUL or surrogate escape: only the full cleaning handles them (raw bytes are never either in
# valid UTF-8, and the fast parser refuses NaN, Infinity, out-of-range numbers and invalid bytes).
_UNSTORABLE_ESCAPE = re.compile(rb"\\u(?:0000|[dD][89a-fA-F])")
_LONG_NUMBER = re.compile(rb"[0-9]{19}")
_FLAT = frozenset((str, int, bool, type(None)))


def usage_events_store(*, events: list[dict[str, Any]], clean: bool = False) -> None:
    """Insert events (the shape usage_event_record takes), skipping request ids already stored.

    `clean`: the events come from `usage_event_parse` saying their text and metadata need no
    cleaning. See `usage_rows_store` for how a replayed event never makes a second row.
    """
    if events:
        usage_rows_store(usage_rows_prepare(events=events, clean=clean, vendor=connection.vendor))


class UsageRows(NamedTuple):
    """A batch's rows, ready for the database: `lines` in the COPY's column order on
    PostgreSQL, else `values` by attribute name; `owners` the (workspace id, group id) pairs
    they name."""

    values: list[dict[str, Any]]
    lines: list[tuple[Any, ...]]
    owners: frozenset[tuple[str, str]]


def usage_rows_prepare(
    *, events: list[dict[str, Any]], clean: bool = False, vendor: str
) -> UsageRows:
    """The rows of events for a database of `vendor`, built without touching the database (ingest
    prepares the next batch while the current one is written). On PostgreSQL the statements must
    be built first, once a process, by `usage_rows_ready` on a thread that may use the database."""
    values = [usage_event_values(event=event, clean=clean) for event in events]
    owners = frozenset([(row["workspace_id"], row["group_id"]) for row in values])
    if vendor != "postgresql":
        return UsageRows(values=values, lines=[], owners=owners)
    plan = _copy_plan()
    # What the model would fill in itself (defaults), per column, once a batch; `created_at` is
    # left to the database (see _copy_fields).
    implied = {field.attname: field.get_default() for field in _copy_fields()}
    line, jsons = plan.line, plan.jsons
    for row in values:
        for name in jsons:
            row[name] = orjson.dumps(row[name])
    return UsageRows(values=[], lines=[line(implied | row) for row in values], owners=owners)


def usage_rows_ready() -> str:
    """This database's vendor, its batch statements built (call before `usage_rows_prepare`)."""
    if connection.vendor == "postgresql":
        _copy_plan()
    return str(connection.vendor)


def usage_rows_store(rows: UsageRows) -> None:
    """Insert prepared rows, skipping request ids already stored. Raises IntegrityError, storing
    nothing, when a row names a group that is not its workspace's (see `_owners_check`).

    On PostgreSQL the rows are copied (binary COPY) straight into the table; when one is already
    stored, the whole batch is copied into this session's staging table instead and inserted
    from there with ON CONFLICT DO NOTHING, so a replayed event never makes a second row.
    """
    _owners_check(rows.owners)
    if not rows.lines:
        if rows.values:
            objects = [UsageEvent(**row) for row in rows.values]
            UsageEvent.objects.bulk_create(objects, ignore_conflicts=True)
        return
    plan = _copy_plan()
    with transaction.atomic(), connection.cursor() as cursor:
        # Straight into the table first: a replayed event is rare (a reclaimed entry), and then
        # the unique key refuses the whole COPY, which is redone through the staging table.
        try:
            with transaction.atomic():
                _copy(cursor, plan.copy_direct, plan.types, rows.lines)
            return
        except IntegrityError as exc:
            if not isinstance(exc.__cause__, UniqueViolation):
                raise
        cursor.execute(plan.stage_create)
        _copy(cursor, plan.copy_stage, plan.types, rows.lines)
        cursor.execute(plan.insert)


# (workspace id, group id) pairs found in the database. A group never changes workspace and its
# row is never deleted (a deleted group is only marked so), so a pair found stays true for the
# life of the process; the set is emptied when it grows past OWNERS_KNOWN_MAX.
_owners_known: set[tuple[str, str]] = set()
OWNERS_KNOWN_MAX = 100_000


def _owners_check(owners: frozenset[tuple[str, str]]) -> None:
    """Refuse rows naming a group that does not exist or is not in the row's workspace: what the
    database's foreign keys checked row by row, checked once a batch (and once a process for a
    pair already seen)."""
    unknown = owners - _owners_known
    if not unknown:
        return
    groups = {group_id for _, group_id in unknown}
    found = set(Group.objects.filter(pk__in=groups).values_list("workspace_id", "pk"))
    if len(_owners_known) + len(found) > OWNERS_KNOWN_MAX:
        _owners_known.clear()
    _owners_known.update(found)
    if missing := unknown - found:
        named = ", ".join(f"{group} in {workspace}" for workspace, group in sorted(missing)[:3])
        raise IntegrityError(f"no such group in the event's workspace: {named}")


def _copy(
    cursor: Any, statement: str, types: tuple[int, ...], lines: list[tuple[Any, ...]]
) -> None:
    cursor.cursor.adapters.register_dumper(None, _JsonbEncodedDumper)
    with connection.wrap_database_errors, cursor.cursor.copy(statement) as copy:
        copy.set_types(types)
        write = copy.write_row
        for line in lines:
            write(line)


class _JsonbEncodedDumper(JsonbBinaryDumper):
    """A jsonb column's binary COPY value from its JSON text, already encoded (bytes)."""

    def dump(self, obj: Any) -> bytes:
        return b"\x01" + bytes(obj)


class _CopyPlan(NamedTuple):
    names: tuple[str, ...]
    jsons: tuple[str, ...]
    types: tuple[int, ...]
    line: Callable[[dict[str, Any]], tuple[Any, ...]]
    stage_create: str
    copy_direct: str
    copy_stage: str
    insert: str


@functools.cache
def _copy_plan() -> _CopyPlan:
    """The statements of a PostgreSQL batch, built once a process.

    The COPY is binary, each column typed as the table's (read from the catalog). The staging
    table lives as long as the session and is emptied at each commit, so a batch costs no
    catalog writes; its name carries the column list, so a session that outlived a
    migration never copies into a stale shape.
    """
    fields = _copy_fields()
    quote = connection.ops.quote_name
    table = quote(UsageEvent._meta.db_table)
    columns = ", ".join(quote(field.column) for field in fields)
    stage = f"{_STAGE}_{hashlib.sha1(columns.encode()).hexdigest()[:10]}"
    names = tuple(field.attname for field in fields)
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT attname, atttypid FROM pg_attribute "
            "WHERE attrelid = %s::regclass AND attnum > 0 AND NOT attisdropped",
            [table],
        )
        types = dict(cursor.fetchall())
    return _CopyPlan(
        names=names,
        jsons=tuple(field.attname for field in fields if isinstance(field, JSONField)),
        types=tuple(int(types[field.column]) for field in fields),
        line=operator.itemgetter(*names),
        **_copy_statements(table=table, stage=stage, columns=columns),
    )


def _copy_fields() -> list[Any]:
    """The columns a batch copies: all but `created_at`, which PostgreSQL fills with its default,
    now(), the start of the transaction that stores the batch (a batch prepared ahead of a slow
    write is never older than the transaction storing it: the usage rollup counts on that)."""
    return [field for field in UsageEvent._meta.concrete_fields if field.attname != "created_at"]


def _copy_statements(*, table: str, stage: str, columns: str) -> dict[str, str]:
    """The SQL of a batch: the staging table, both COPYs, and the insert that skips what is
    already stored (the conflict target lives here, and only here)."""
    return {
        "stage_create": (
            f"CREATE TEMP TABLE IF NOT EXISTS {stage} (LIKE {table} INCLUDING DEFAULTS) "
            "ON COMMIT DELETE ROWS"
        ),
        "copy_direct": f"COPY {table} ({columns}) FROM STDIN (FORMAT BINARY)",
        "copy_stage": f"COPY {stage} ({columns}) FROM STDIN (FORMAT BINARY)",
        "insert": f"INSERT INTO {table} ({columns}) SELECT {columns} FROM {stage} "
        "ON CONFLICT DO NOTHING",
    }


def usage_event_parse(raw: bytes) -> tuple[Any, bool]:
    """A stream entry's JSON and whether it is clean: no string holding a NUL or an unpaired
    surrogate, no number that is not finite or not exact, metadata nested no deeper than the
    limit. A clean event is stored as it is; any other goes through the full cleaning.

    The checks read the raw bytes, so they may send a clean event the slow way, never an unclean
    one the fast way.
    """
    if _UNSTORABLE_ESCAPE.search(raw) is None and (
        raw.count(b"{") + raw.count(b"[") <= MAX_METADATA_DEPTH
    ):
        try:
            event = orjson.loads(raw)
        except orjson.JSONDecodeError:
            event = None
        if type(event) is dict and _numbers_exact(event.get("requestMetadata"), raw):
            return event, True
    return json.loads(raw), False


def _numbers_exact(metadata: Any, raw: bytes) -> bool:
    """Whether the fast parser kept the metadata's numbers exact: it reads an integer past 64 bits
    as a float, so metadata holding a float or a nested value is checked for long digit runs."""
    if type(metadata) is dict and all(type(value) in _FLAT for value in metadata.values()):
        return True
    return _LONG_NUMBER.search(raw) is None


def usage_events_store_direct(*, events: list[dict[str, Any]]) -> None:
    """Store events straight into the database, each on its own and leniently, then close this
    thread's connections: what recording does in a worker thread when Redis is down."""
    try:
        for event in events:
            usage_event_store_lenient(event=event)
    finally:
        connections.close_all()


def usage_event_store_lenient(*, event: dict[str, Any]) -> None:
    """Store one event; if the database refuses it, store it without its metadata, noted.

    Raises only when even that is refused (no workspace or group, no request id...).
    """
    try:
        with transaction.atomic():
            usage_events_store(events=[event])
        return
    except Exception as exc:  # noqa: BLE001 - any refusal: the tokens are stored all the same
        database_down_reraise(exc)
        reason = text_clean(f"{type(exc).__name__}: {exc}")[:200]
    bare = {**event, "requestMetadata": None, "ingestNote": f"requestMetadata dropped: {reason}"}
    with transaction.atomic():
        usage_events_store(events=[bare])


def database_down_reraise(exc: Exception) -> None:
    """Re-raise `exc` when the database itself is unreachable: then nothing is the event's fault
    and the entries stay pending. Anything else is this event's problem."""
    if not isinstance(exc, OperationalError | InterfaceError):
        return
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
    except DatabaseError:
        raise exc from None


def usage_event_values(*, event: dict[str, Any], clean: bool = False) -> dict[str, Any]:
    """The UsageEvent column values (by attribute name) of one stream payload, cleaned so the
    database can always store them; the model's defaults fill the rest. `clean`: the payload is
    known to hold no string or metadata that needs cleaning (see `usage_event_parse`)."""
    if clean and (values := _values_plain(event)) is not None:
        return values
    notes = [event.get("ingestNote") or ""]
    metadata = event.get("requestMetadata")
    if not clean or not isinstance(metadata, dict):
        metadata, note = metadata_sanitize(metadata)
        notes.append(note)
    tokens = event.get("tokens")
    tokens = tokens if isinstance(tokens, dict) else {}
    values = {
        attname: _text(event.get(key), key, limit, notes, required=required, clean=clean)
        for key, attname, limit, required in _TEXTS
    }
    values.update(
        timestamp=_timestamp(event.get("timestamp"), notes, key=values["idempotency_key"]),
        request_metadata=metadata,
        status=_status(event.get("status")),
        input_tokens=_count(tokens, "inputTokens", notes),
        output_tokens=_count(tokens, "outputTokens", notes),
        cached_input_tokens=_count(tokens, "cachedInputTokens", notes),
        usage_estimated=bool(event.get("usageEstimated")),
        http_status=_http_status(event.get("httpStatus")),
        total_ms=float_clean(event.get("totalMs") or 0) or 0.0,
        upstream_ms=float_clean(event.get("upstreamMs") or 0) or 0.0,
        first_byte_ms=float_clean(event.get("firstByteMs")),
    )
    cost = event.get("cost")
    if cost is not None:
        values.update(_cost(cost, notes))
    note = "; ".join(str(n) for n in notes if n)
    values["ingest_note"] = text_clean(note)[:500] if note else ""
    return values


# (payload key, attribute, length limit, required): the text columns of a usage event.
_TEXTS = (
    ("idempotencyKey", "idempotency_key", 26, True),
    ("requestId", "request_id", 64, True),
    ("workspaceId", "workspace_id", 40, True),
    ("groupId", "group_id", 40, True),
    ("externalEntityId", "external_entity_id", 255, False),
    ("apiKeyPrefix", "api_key_prefix", 16, False),
    ("modelSlug", "model_slug", 201, True),
    ("target", "target", 64, False),
)


def _values_plain(event: dict[str, Any]) -> dict[str, Any] | None:
    """The column values of a clean event every field of which is already what its column holds
    (what the gateway records); None when anything needs the full path's cleaning or a note.

    Written out test by test: it runs once an event on ingest's hot loop."""
    get = event.get
    values: dict[str, Any] = {}
    for key, attname, limit, required in _TEXTS:
        value = get(key)
        if value is None and not required:
            value = ""
        elif type(value) is not str or len(value) > limit or (required and not value):
            return None
        values[attname] = value
    metadata, tokens = get("requestMetadata"), get("tokens")
    status, http = get("status"), get("httpStatus", 200)
    if type(metadata) is not dict or type(tokens) is not dict or get("ingestNote"):
        return None
    if status not in _STATUSES or type(http) is not int or not 0 <= http <= 32767:
        return None
    counted = tokens.get
    inputs, outputs = counted("inputTokens", 0), counted("outputTokens", 0)
    cached = counted("cachedInputTokens", 0)
    for count in (inputs, outputs, cached):
        if type(count) is not int or not 0 <= count <= BIGINT_MAX:
            return None
    total, upstream, first_byte = get("totalMs"), get("upstreamMs"), get("firstByteMs")
    for timing in (total, upstream, first_byte):
        if timing is not None and type(timing) is not float and type(timing) is not int:
            return None
    stamp = get("timestamp")
    if type(stamp) is not str:
        return None
    try:
        moment = datetime.fromisoformat(stamp.replace("Z", "+00:00"))
    except ValueError:
        return None
    if moment.tzinfo is None:
        return None
    values |= {
        "timestamp": moment,
        "request_metadata": metadata,
        "status": status,
        "input_tokens": inputs,
        "output_tokens": outputs,
        "cached_input_tokens": cached,
        "usage_estimated": bool(get("usageEstimated")),
        "http_status": http,
        "total_ms": float(total or 0),
        "upstream_ms": float(upstream or 0),
        "first_byte_ms": None if first_byte is None else float(first_byte),
        "ingest_note": "",
    }
    cost = get("cost")
    if cost is not None:
        notes: list[str] = []
        values |= _cost(cost, notes)
        if notes:
            return None
    return values


def _text(
    value: Any, key: str, limit: int, notes: list[str], *, required: bool, clean: bool
) -> str:
    """A text column's value; a key column that would need changing makes the event unstorable."""
    if isinstance(value, str) and value and len(value) <= limit and clean:
        return value
    if not isinstance(value, str) or not value:
        if required:
            raise KeyError(f"{key} is missing or not a string")
        if value not in (None, ""):
            notes.append(f"{key}: not a string, left empty")
        return ""
    cleaned = text_clean(value)
    if cleaned != value or len(cleaned) > limit:
        if required:
            raise ValueError(f"{key} cannot be stored as it is")
        notes.append(f"{key}: cleaned to fit")
    return cleaned[:limit]


def _status(value: Any) -> str:
    return value if isinstance(value, str) and value in _STATUSES else "completed"


def _http_status(value: Any) -> int:
    number = float_clean(value or 200)
    return int(number) if number is not None and 0 <= number <= 32767 else 0


def _timestamp(value: Any, notes: list[str], *, key: str) -> datetime:
    """The event's time; when unreadable, the time its idempotency key (a ULID) was drawn, so a
    replay of the entry meets its first copy (the ingest time only for a key that is no ULID)."""
    try:
        moment = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        moment = None
    if moment is not None and moment.tzinfo is not None:
        return moment
    try:
        moment, used = ULID.from_str(key).datetime, "the idempotency key's time"
    except ValueError:
        moment, used = timezone.now(), "ingest time"
    notes.append(f"timestamp {str(value)[:40]!r} unreadable: {used} used")
    return moment


def _cost(value: Any, notes: list[str]) -> dict[str, Any]:
    """The cost columns of a priced event's `cost`; an unreadable one is noted, not guessed."""
    if value is None:
        return {}
    currency = value.get("currency") if isinstance(value, dict) else None
    amount = value.get("amount") if isinstance(value, dict) else None
    if not isinstance(currency, str) or not CURRENCY.match(currency):
        notes.append(f"cost {str(value)[:60]!r} unreadable: not stored")
        return {}
    if not isinstance(amount, str) or not AMOUNT.match(amount):
        notes.append(f"cost {str(value)[:60]!r} unreadable: not stored")
        return {}
    return {"cost_currency": currency, "cost_amount": Decimal(amount)}


def _count(tokens: dict[str, Any], key: str, notes: list[str]) -> int:
    number = count_clean(tokens.get(key))
    if number is None:
        notes.append(f"tokens.{key} {str(tokens.get(key))[:40]!r} is not a count: 0 stored")
        return 0
    return number
