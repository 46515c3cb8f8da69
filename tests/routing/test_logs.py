"""The buffered log handler: one write per batch, warnings at once, nothing stranded when idle."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import pytest

from gateway_project.logs import BufferedStreamHandler, JsonFormatter
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
