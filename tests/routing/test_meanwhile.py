"""`meanwhile` runs work in the event loop's next step: after the caller has started its round
trip and yielded, before the caller resumes even when the answer is already there; a failure in
it is logged, never raised into the request. `afterwards` holds a finished request's bookkeeping
until a request next waits (a `meanwhile`), or a few milliseconds when none does."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine
from typing import Any

import pytest
import uvloop

from gateway_project.kernel.meanwhile import (
    AFTERWARDS_LATEST,
    afterwards,
    afterwards_run,
    meanwhile,
)

Runner = Callable[[Coroutine[Any, Any, Any]], Any]


@pytest.fixture(params=["asyncio", "uvloop"])
def run(request: pytest.FixtureRequest) -> Runner:
    return asyncio.run if request.param == "asyncio" else uvloop.run


async def _order() -> list[str]:
    loop = asyncio.get_running_loop()
    events: list[str] = []
    answer: asyncio.Future[None] = loop.create_future()
    meanwhile(events.append, "meanwhile")
    events.append("caller waits")
    loop.call_soon(answer.set_result, None)  # the answer arrives in the same step
    await answer
    events.append("caller resumed")
    return events


def test_the_work_runs_after_the_caller_yields_and_before_it_resumes(run: Runner) -> None:
    assert run(_order()) == ["caller waits", "meanwhile", "caller resumed"]


async def _failing() -> str:
    def broken() -> None:
        raise RuntimeError("drafting failed")

    meanwhile(broken)
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    return "request went on"


def test_a_failure_is_logged_and_the_caller_goes_on(
    run: Runner, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="gateway.request"):
        assert run(_failing()) == "request went on"

    [record] = [r for r in caplog.records if r.name == "gateway.request"]
    assert "ahead of time" in record.getMessage()
    assert record.exc_info is not None and "drafting failed" in str(record.exc_info[1])


async def _bookkeeping_order() -> list[str]:
    loop = asyncio.get_running_loop()
    events: list[str] = []
    afterwards(events.append, "bookkeeping")
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    events.append("next request arrives")
    answer: asyncio.Future[None] = loop.create_future()
    meanwhile(events.append, "draft")
    events.append("caller waits")
    loop.call_soon(answer.set_result, None)
    await answer
    events.append("caller resumed")
    return events


def test_bookkeeping_waits_for_the_next_request_to_wait_then_runs_before_it_resumes(
    run: Runner,
) -> None:
    assert run(_bookkeeping_order()) == [
        "next request arrives",
        "caller waits",
        "draft",
        "bookkeeping",
        "caller resumed",
    ]


async def _idle() -> tuple[list[str], list[str]]:
    events: list[str] = []
    afterwards(events.append, "one")
    afterwards(events.append, "two")
    await asyncio.sleep(0)
    early = list(events)
    await asyncio.sleep(AFTERWARDS_LATEST * 10)
    return early, events


def test_with_no_request_waiting_bookkeeping_runs_within_milliseconds(run: Runner) -> None:
    early, late = run(_idle())
    assert early == []
    assert late == ["one", "two"]


async def _at_once() -> list[str]:
    events: list[str] = []
    afterwards(events.append, "metrics")
    afterwards_run()  # a scrape or shutdown does not wait
    return events


def test_a_scrape_or_shutdown_runs_what_is_held_at_once(run: Runner) -> None:
    assert run(_at_once()) == ["metrics"]


async def _one_fails() -> list[str]:
    events: list[str] = []

    def broken() -> None:
        raise RuntimeError("log line failed")

    afterwards(broken)
    afterwards(events.append, "next one")
    afterwards_run()
    return events


def test_a_failing_piece_is_logged_and_the_rest_still_runs(
    run: Runner, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="gateway.request"):
        assert run(_one_fails()) == ["next one"]

    [record] = [r for r in caplog.records if r.name == "gateway.request"]
    assert "bookkeeping" in record.getMessage()
    assert record.exc_info is not None and "log line failed" in str(record.exc_info[1])
