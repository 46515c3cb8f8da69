"""Background loops of a worker are supervised: one that dies is logged and restarted."""

from __future__ import annotations

import asyncio
import logging

import pytest

from routing.lifecycle import Supervisor
from tests.waiting import wait_until_async


def test_a_background_loop_that_crashes_is_logged_and_restarted(
    caplog: pytest.LogCaptureFixture,
) -> None:
    runs: list[int] = []

    async def scenario() -> None:
        supervisor = Supervisor()

        async def flaky() -> None:
            runs.append(1)
            if len(runs) < 3:
                raise RuntimeError("boom")
            await supervisor.stop.wait()

        supervisor.start("flaky", flaky)
        await wait_until_async(lambda: len(runs) == 3, what="two restarts")
        assert not supervisor.running["flaky"].done()
        await supervisor.close()

    with caplog.at_level(logging.ERROR, logger="routing.lifecycle"):
        asyncio.run(scenario())

    crashes = [r for r in caplog.records if "flaky failed; restarting" in r.getMessage()]
    assert len(crashes) == 2 and crashes[0].exc_info is not None


def test_a_loop_that_returns_or_is_cancelled_before_shutdown_is_restarted() -> None:
    runs: list[int] = []

    async def scenario() -> None:
        supervisor = Supervisor()

        async def short_lived() -> None:
            runs.append(1)
            if len(runs) == 1:
                return
            await asyncio.Event().wait()  # runs until cancelled

        supervisor.start("short", short_lived)
        await wait_until_async(lambda: len(runs) == 2, what="restart after return")
        supervisor.running["short"].cancel()
        await wait_until_async(lambda: len(runs) == 3, what="restart after cancel")
        await supervisor.close()

    asyncio.run(scenario())


def test_closing_the_supervisor_stops_its_loops_for_good() -> None:
    runs: list[int] = []

    async def scenario() -> Supervisor:
        supervisor = Supervisor()

        async def forever() -> None:
            runs.append(1)
            await asyncio.Event().wait()

        supervisor.start("forever", forever)
        await wait_until_async(lambda: runs, what="started")
        await supervisor.close()
        return supervisor

    supervisor = asyncio.run(scenario())

    assert runs == [1]
    assert all(task.done() for task in supervisor.running.values())
