"""Structured (JSON) log lines."""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from datetime import UTC, datetime
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


class JsonFormatter(_PythonJsonFormatter):
    """One JSON object per line: BASE_KEYS, then the fields passed with `extra=`.

    A plain line (a text message, no exception or stack) is built here directly, the same bytes
    python-json-logger writes at a fraction of its cost: every inference request writes one."""

    def __init__(self) -> None:
        super().__init__(
            ["asctime", "levelname", "name", "message"], rename_fields=_RENAMED, json_default=str
        )
        self._encoder = json.JSONEncoder(default=str)

    def format(self, record: logging.LogRecord) -> str:
        """The record's JSON line."""
        if isinstance(record.msg, dict) or record.exc_info or record.exc_text or record.stack_info:
            return str(super().format(record))
        record.message = record.getMessage()
        record.asctime = self.formatTime(record)
        data = {
            "ts": record.asctime,
            "level": record.levelname,
            "logger": record.name,
            "msg": record.message,
        }
        skip = self._skip_fields
        for key, value in record.__dict__.items():
            if key not in skip and not key.startswith("_"):
                data[_RENAMED.get(key, key)] = value
        return str(self._encoder.encode(data))

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:  # noqa: N802 - logging's name
        """UTC, ISO 8601, milliseconds."""
        return datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds")


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
            line = self.format(record) + self.terminator
        except Exception:  # noqa: BLE001 - logging must never raise into the caller
            self.handleError(record)
            return
        with self.lock:  # type: ignore[union-attr]
            self._lines.append(line)
            self._size += len(line)
            now = time.monotonic()
            due = now - self._last >= self.FLUSH_SECONDS or self._size >= self.BUFFER_BYTES
            if record.levelno >= logging.WARNING or due:
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
