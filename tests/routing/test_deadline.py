"""The request path's deadlines behave as asyncio.timeout does (TimeoutError at the deadline,
within the wheel's granularity; CancelledError from elsewhere kept; the task's cancellation count
restored), with one timer per loop however many blocks run."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Coroutine
from typing import Any

import pytest
import uvloop

from gateway_project.kernel import deadline as deadline_module
from gateway_project.kernel.deadline import GRANULARITY_MS, _wheel, deadline

Runner = Callable[[Coroutine[Any, Any, Any]], Any]


@pytest.fixture(params=["asyncio", "uvloop"])
def run(request: pytest.FixtureRequest) -> Runner:
    return asyncio.run if request.param == "asyncio" else uvloop.run


async def _timed_out_after(delay: float) -> float | None:
    started = time.monotonic()
    try:
        async with deadline(delay):
            await asyncio.sleep(5)
    except TimeoutError:
        return time.monotonic() - started
    return None


def test_a_block_past_its_deadline_raises_timeout_error_at_the_deadline(run: Runner) -> None:
    async def scenario() -> tuple[list[float | None], int]:
        # Started together, in no order: each expires at its own time.
        waited = await asyncio.gather(*(_timed_out_after(d) for d in (0.3, 0.05, 0.15, 0.01)))
        return list(waited), asyncio.current_task().cancelling()  # type: ignore[union-attr]

    waited, cancelling = run(scenario())

    for took, delay in zip(waited, (0.3, 0.05, 0.15, 0.01), strict=True):
        assert took is not None
        assert delay - 0.002 <= took < delay + GRANULARITY_MS / 1000 + 0.1
    assert cancelling == 0


def test_a_block_done_in_time_leaves_no_cancellation_behind(run: Runner) -> None:
    async def scenario() -> tuple[str, int, bool, int]:
        async with deadline(0.05) as bounded:
            value = "done"
        await asyncio.sleep(0.1)  # past the deadline: nothing may cancel the task now
        task = asyncio.current_task()
        assert task is not None
        wheel = _wheel(asyncio.get_running_loop())
        return value, task.cancelling(), bounded.expired(), len(wheel.slots)

    assert run(scenario()) == ("done", 0, False, 0)


def test_an_inner_deadline_ends_only_the_inner_block(run: Runner) -> None:
    async def scenario() -> list[str]:
        steps = []
        async with deadline(2) as outer:
            try:
                async with deadline(0.02):
                    await asyncio.sleep(5)
            except TimeoutError:
                steps.append("inner timed out")
            await asyncio.sleep(0.05)
            steps.append("outer went on")
        steps.append(f"outer expired: {outer.expired()}")
        return steps

    assert run(scenario()) == ["inner timed out", "outer went on", "outer expired: False"]


def test_a_cancellation_from_elsewhere_stays_a_cancellation(run: Runner) -> None:
    async def scenario() -> str:
        async def bounded() -> None:
            async with deadline(5):
                await asyncio.sleep(5)

        task = asyncio.create_task(bounded())
        await asyncio.sleep(0.02)
        task.cancel()
        try:
            await task
        except asyncio.CancelledError:
            return "cancelled"
        except TimeoutError:
            return "timed out"
        return "finished"

    assert run(scenario()) == "cancelled"


def test_no_deadline_bounds_nothing(run: Runner) -> None:
    async def scenario() -> str:
        async with deadline(None):
            await asyncio.sleep(0.02)
        return "done"

    assert run(scenario()) == "done"


def test_a_thousand_blocks_of_one_length_wait_in_one_slot_under_one_timer(run: Runner) -> None:
    async def scenario() -> tuple[int, int, bool, int]:
        gate = asyncio.Event()

        async def bounded() -> None:
            async with deadline(5):
                await gate.wait()

        tasks = [asyncio.create_task(bounded()) for _ in range(1000)]
        await asyncio.sleep(0.01)
        wheel = _wheel(asyncio.get_running_loop())
        waiting = sum(len(members) for members in wheel.slots.values())
        slots, armed = len(wheel.due), wheel.handle is not None
        gate.set()
        await asyncio.gather(*tasks)
        return waiting, slots, armed, sum(len(members) for members in wheel.slots.values())

    waiting, slots, armed, left = run(scenario())

    # Entered within 10 ms of each other, 5 s deadlines fall in one or two 80 ms slots.
    assert (waiting, armed, left) == (1000, True, 0)
    assert slots <= 2


def test_a_long_deadline_s_blocks_share_a_few_slots_however_many_run(run: Runner) -> None:
    async def scenario() -> tuple[int, int]:
        for _ in range(3000):
            async with deadline(60):
                await asyncio.sleep(0)
        wheel = _wheel(asyncio.get_running_loop())
        return len(wheel.slots), len(wheel.due)

    slots, due = run(scenario())

    # A minute-long deadline's slot is 1.28 s wide: the run spans one or two of them.
    assert slots <= 3 and due <= 3


def test_the_wheels_of_closed_loops_are_let_go() -> None:
    async def bounded() -> None:
        async with deadline(60):
            await asyncio.sleep(0)

    for _ in range(40):
        asyncio.run(bounded())

    assert len(deadline_module._wheels) <= deadline_module._WHEELS_MAX
