"""`meanwhile` runs work in the event loop's next step: after the caller has started its round
trip and yielded, before the caller resumes even when the answer is already there; a failure in
it is logged, never raised into the request."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine
from typing import Any

import pytest
import uvloop

from gateway_project.kernel.meanwhile import meanwhile

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
