"""Structured (JSON) log lines."""

from __future__ import annotations

import json
import logging
import math
import os
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from json.encoder import encode_basestring_ascii
from typing import Any

from pythonjsonlogger.json import JsonFormatter as _PythonJsonFormatter

# The keys every line starts with, on every process (gateway, Celery worker and beat).
BASE_KEYS = ("ts", "level", "logger", "msg")
# What a request's line adds, whichever process served it: an inference request (gateway.request),
# a management API call (gateway.management) or a Celery task (gateway.task).
REQUEST_KEYS = (*BASE_KEYS, "request_id", "route", "status", "total_ms")
_RENAMED = {
    "asctime": "ts",
    "levelname": "level",
    "name": "logger",
    "message": "msg",
    "exc_info": "exc",
}
# How JSONEncoder (ensure_ascii, allow_nan) writes a value of each exact type: a plain line's
# values are these; any other type takes the encoder itself.
_TEXT: dict[type, Callable[[Any], str]] = {
    str: encode_basestring_ascii,
    int: int.__repr__,
    bool: lambda value: "true" if value else "false",
    type(None): lambda value: "null",
    float: lambda value: (
        float.__repr__(value)
        if math.isfinite(value)
        else ("NaN" if value != value else "Infinity" if value > 0 else "-Infinity")
    ),
}
# Templates of plain lines, per (logger, level, message, field names); the callers are a few
# fixed sites, so this stays small (past the bound, lines are encoded as a whole).
_TEMPLATES_MAX = 64


class JsonFormatter(_PythonJsonFormatter):
    """One JSON object per line: BASE_KEYS, then the fields passed with `extra=`.

    A plain line (a text message, no exception or stack) is built here directly, the same bytes
    python-json-logger writes at a fraction of its cost: every inference request writes one."""

    def __init__(self) -> None:
        super().__init__(
            ["asctime", "levelname", "name", "message"], rename_fields=_RENAMED, json_default=str
        )
        self._encoder = json.JSONEncoder(default=str)
        self._templates: dict[tuple[str, ...], tuple[str, tuple[str | None, ...]] | None] = {}

    def format(self, record: logging.LogRecord) -> str:
        """The record's JSON line."""
        if isinstance(record.msg, dict) or record.exc_info or record.exc_text or record.stack_info:
            return str(super().format(record))
        record.message = record.getMessage()
        record.asctime = self.formatTime(record)
        return self.plain_line(
            ts=record.asctime,
            level=record.levelname,
            logger=record.name,
            message=record.message,
            fields=record.__dict__,
        )

    def plain_line(
        self, *, ts: str, level: str, logger: str, message: str, fields: dict[str, Any]
    ) -> str:
        """The line of a plain record: BASE_KEYS, then `fields` but a record's own attributes."""
        data = {"ts": ts, "level": level, "logger": logger, "msg": message}
        skip = self._skip_fields
        for key, value in fields.items():
            if key not in skip and not key.startswith("_"):
                data[_RENAMED.get(key, key)] = value
        return str(self._encoder.encode(data))

    def fields_line(
        self, *, ts: str, level: str, logger: str, message: str, fields: dict[str, Any]
    ) -> str:
        """`plain_line`'s bytes, from a template of the keys built once per set of field names."""
        names = (logger, level, message, *fields)
        if names in self._templates:
            template = self._templates[names]
        else:
            template = self._template(names)
        if template is None:
            return self.plain_line(
                ts=ts, level=level, logger=logger, message=message, fields=fields
            )
        head, keys = template
        parts = ['{"ts": "', ts, head]
        text = _TEXT
        try:
            for key, value in zip(keys, fields.values(), strict=True):
                if key is not None:
                    parts.append(key)
                    parts.append(text[type(value)](value))
        except KeyError:
            return self.plain_line(
                ts=ts, level=level, logger=logger, message=message, fields=fields
            )
        parts.append("}")
        return "".join(parts)

    def _template(self, names: tuple[str, ...]) -> tuple[str, tuple[str | None, ...]] | None:
        # None: the line is encoded as a whole (a field renamed onto a base key, or too many sets).
        logger, level, message, *keys = names
        if not all(type(key) is str for key in keys):
            return None
        skip = self._skip_fields
        shown = [
            None if key in skip or key.startswith("_") else _RENAMED.get(key, key) for key in keys
        ]
        kept = [key for key in shown if key is not None]
        template: tuple[str, tuple[str | None, ...]] | None = None
        if len(set(kept)) == len(kept) and not set(kept) & set(BASE_KEYS):
            head = (
                f'", "level": {encode_basestring_ascii(level)}, '
                f'"logger": {encode_basestring_ascii(logger)}, '
                f'"msg": {encode_basestring_ascii(message)}'
            )
            key_texts = tuple(
                None if key is None else f", {encode_basestring_ascii(key)}: " for key in shown
            )
            template = (head, key_texts)
        if len(self._templates) < _TEMPLATES_MAX:
            self._templates[names] = template
        return template

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:  # noqa: N802 - logging's name
        """UTC, ISO 8601, milliseconds."""
        return time_text(record.created)


def time_text(created: float) -> str:
    """A line's `ts`: UTC, ISO 8601, milliseconds."""
    return datetime.fromtimestamp(created, UTC).isoformat(timespec="milliseconds")


_second: tuple[int, str] = (-1, "")


def now_text(now: float) -> str:
    """`time_text(now)`, the date and time to the second built once per second."""
    global _second  # noqa: PLW0603 - one tuple, swapped whole: threads never see half of it
    # datetime.fromtimestamp's rounding: the fraction to the microsecond, half to even.
    fraction, whole = math.modf(now)
    micro = round(fraction * 1e6)
    if micro >= 1_000_000:
        micro -= 1_000_000
        whole += 1.0
    second = int(whole)
    cached = _second
    if cached[0] != second:
        cached = _second = (
            second,
            datetime.fromtimestamp(second, UTC).isoformat(timespec="seconds")[:19],
        )
    return f"{cached[1]}.{micro // 1000:03d}+00:00"


class BufferedStreamHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """A StreamHandler that writes in batches: one write per FLUSH_SECONDS (or BUFFER_BYTES)
    instead of one per line, since a per-request log line would otherwise cost the inference path
    a write syscall per request. WARNING and above, and process exit, flush at once; a daemon
    thread (one per process: started again after a fork) writes what an idle process buffered."""

    FLUSH_SECONDS = 0.5
    BUFFER_BYTES = 64 * 1024

    def __init__(self, stream: Any = None) -> None:
        super().__init__(stream)
        self._lines: list[str] = []
        self._size = 0
        self._last = time.monotonic()
        self._flusher_pid = 0

    def emit(self, record: logging.LogRecord) -> None:
        """Buffer the formatted line; write the buffer when it is due."""
        try:
            line = self.format(record)
        except Exception:  # noqa: BLE001 - logging must never raise into the caller
            self.handleError(record)
            return
        self.line_add(line, levelno=record.levelno)

    def line_add(self, line: str, *, levelno: int) -> None:
        """Buffer a formatted line (without its terminator); write the buffer when it is due."""
        line += self.terminator
        with self.lock:  # type: ignore[union-attr]
            self._lines.append(line)
            self._size += len(line)
            now = time.monotonic()
            due = now - self._last >= self.FLUSH_SECONDS or self._size >= self.BUFFER_BYTES
            if levelno >= logging.WARNING or due:
                self._write()
                self._last = now
            elif self._flusher_pid != os.getpid():
                self._flusher_pid = os.getpid()
                threading.Thread(target=self._flush_forever, name="log-flush", daemon=True).start()

    def _flush_forever(self) -> None:
        while True:
            time.sleep(self.FLUSH_SECONDS)  # a timer, not a wait for a condition
            self.flush()

    def flush(self) -> None:
        """Write whatever is buffered."""
        with self.lock:  # type: ignore[union-attr]
            self._write()
            self._last = time.monotonic()

    def _write(self) -> None:
        if not self._lines:
            return
        data, self._lines, self._size = "".join(self._lines), [], 0
        try:
            self.stream.write(data)
            self.stream.flush()
        except Exception:  # noqa: BLE001 - a closed stream at exit, a full disk: drop, go on
            pass


def _plain_handlers(logger: logging.Logger, levelno: int) -> list[BufferedStreamHandler] | None:
    """The handlers an enabled record of `logger` reaches, when each is one of ours with our JSON
    formatter and no filter sits on the way (None: some handler or filter needs a LogRecord)."""
    if logging.getLogRecordFactory() is not logging.LogRecord:
        return None
    found: list[BufferedStreamHandler] = []
    node: logging.Logger | None = logger
    while node is not None:
        if node.filters:
            return None
        for handler in node.handlers:
            if type(handler) is not BufferedStreamHandler or handler.filters:
                return None
            if type(handler.formatter) is not JsonFormatter:
                return None
            if levelno >= handler.level:
                found.append(handler)
        if not node.propagate:
            break
        node = node.parent
    return found or None


def plain_log(logger: logging.Logger, levelno: int, message: str, fields: dict[str, Any]) -> None:
    """`logger.log(levelno, message, extra=fields)`, the same bytes out, but with no LogRecord
    (nor caller lookup) when only our buffered JSON handlers take the line: one per request."""
    if logger.disabled or not logger.isEnabledFor(levelno):
        return
    handlers = _plain_handlers(logger, levelno)
    if handlers is None:
        logger.log(levelno, message, extra=fields, stacklevel=2)
        return
    ts, level = now_text(time.time()), logging.getLevelName(levelno)
    try:
        lines = [
            _formatter(handler).fields_line(
                ts=ts, level=level, logger=logger.name, message=message, fields=fields
            )
            for handler in handlers
        ]
    except Exception:  # noqa: BLE001 - logging must never raise into the caller
        # The usual way, whose handler reports the failure as logging does.
        logger.log(levelno, message, extra=fields, stacklevel=2)
        return
    for handler, line in zip(handlers, lines, strict=True):
        handler.line_add(line, levelno=levelno)


def _formatter(handler: logging.Handler) -> JsonFormatter:
    formatter = handler.formatter
    assert isinstance(formatter, JsonFormatter)
    return formatter
