"""The buffered log handler: one write per batch, warnings at once, nothing stranded when idle."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import pytest

from gateway_project.kernel.logs import (
    BufferedStreamHandler,
    JsonFormatter,
    now_text,
    plain_log,
    time_text,
)
from tests.waiting import wait_until


class CountingStream(io.StringIO):
    """A stream that counts its writes (each is a syscall on a real file)."""

    def __init__(self) -> None:
        super().__init__()
        self.writes = 0

    def write(self, data: str) -> int:
        self.writes += 1
        return super().write(data)


@pytest.fixture
def logged() -> Iterator[tuple[logging.Logger, CountingStream]]:
    stream = CountingStream()
    handler = BufferedStreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger("tests.buffered")
    logger.addHandler(handler)
    logger.propagate = False
    logger.setLevel(logging.INFO)
    yield logger, stream
    logger.removeHandler(handler)
    logger.propagate = True


def test_many_lines_cost_one_write(logged):
    logger, stream = logged

    for n in range(200):
        logger.info("request", extra={"n": n})
    logger.warning("done")

    assert stream.writes <= 3, "a write per batch, not per line"
    assert [json.loads(line)["msg"] for line in stream.getvalue().splitlines()][-2:] == [
        "request",
        "done",
    ]
    assert stream.getvalue().count("\n") == 201


def test_a_warning_is_written_at_once_with_what_came_before(logged):
    logger, stream = logged
    logger.info("first")
    logger.info("second")

    logger.warning("trouble")

    lines = stream.getvalue().splitlines()
    assert [json.loads(line)["msg"] for line in lines] == ["first", "second", "trouble"]


def test_an_idle_process_still_writes_its_last_lines(logged):
    logger, stream = logged
    logger.info("first")
    logger.info("last words")

    wait_until(lambda: "last words" in stream.getvalue(), timeout=3)


FIELDS = {"request_id": "r-1", "status": 200, "slug": 'acme/é"x', "stream": False, "ms": 1.5}


def _without_ts(line: str) -> str:
    data = json.loads(line)
    data.pop("ts")
    return json.dumps(data)


def test_a_plain_line_is_the_bytes_a_log_record_gives(logged):
    logger, stream = logged
    logger.info("inference request", extra=FIELDS)
    logger.warning("flush")
    by_record = stream.getvalue().splitlines()[0]

    plain_log(logger, logging.INFO, "inference request", FIELDS)
    logger.warning("flush")

    plain = stream.getvalue().splitlines()[2]
    assert plain.split('"level"', 1)[1] == by_record.split('"level"', 1)[1]
    assert _without_ts(plain) == _without_ts(by_record)


def test_a_plain_line_still_reaches_a_handler_that_wants_records(logged, caplog):
    logger, stream = logged
    caplog.set_level(logging.INFO, logger="tests.buffered")

    plain_log(logger, logging.INFO, "inference request", FIELDS)

    (record,) = [r for r in caplog.records if r.name == "tests.buffered"]
    assert record.request_id == "r-1"
    assert record.funcName == "test_a_plain_line_still_reaches_a_handler_that_wants_records"
    logger.warning("flush")
    assert json.loads(stream.getvalue().splitlines()[0])["request_id"] == "r-1"


def test_a_plain_line_below_the_level_is_not_written(logged):
    logger, stream = logged
    logger.setLevel(logging.WARNING)

    plain_log(logger, logging.INFO, "inference request", FIELDS)
    logger.warning("flush")

    assert [json.loads(line)["msg"] for line in stream.getvalue().splitlines()] == ["flush"]


@pytest.mark.parametrize(
    "created",
    [1_764_806_400.0, 1_764_806_400.9995, 1_764_806_400.9999996, 1_764_806_400.0000005, 1.5],
)
def test_a_plain_line_time_is_the_time_a_log_record_gives(created):
    assert now_text(created) == time_text(created)
    assert now_text(created + 0.25) == time_text(created + 0.25)


@pytest.mark.parametrize(
    "fields",
    [
        FIELDS,
        {"n": float("nan"), "up": float("inf"), "down": -float("inf"), "big": 10**30, "t": True},
        {"obj": object(), "list": [1, "é"], "none": None},
        {"name": "skipped", "_private": 1, "msg": "a base key", "extra": "kept"},
        {"asctime": "renamed away", "args": (), "x": "\u2028"},
    ],
)
def test_a_line_from_a_template_is_the_line_encoded_whole(fields):
    formatter = JsonFormatter()
    line = {"ts": "2026-12-04T02:00:00.000+00:00", "level": "INFO", "logger": "a", "message": "m"}

    twice = [formatter.fields_line(**line, fields=fields) for _ in range(2)]

    assert twice == [formatter.plain_line(**line, fields=fields)] * 2
