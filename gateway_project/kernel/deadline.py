"""Timeouts for the request path: `asyncio.timeout`'s behaviour, one timer per loop.

`asyncio.timeout` arms a timer of its own on entry and cancels it on exit; a request takes three
or more (the limits script, the upstream's first byte, the record step), and on this path the
timer's start and stop cost more than the rest of the block's bookkeeping. `deadline` files each
block under a slot of its loop's wheel: its deadline rounded up to a multiple of the slot width,
5 ms for a short deadline and 1/64 to 1/32 of a long one (so a wheel holds some sixty slots per
distinct deadline length, whatever the load). The wheel keeps one timer, armed for the earliest
slot, and cancels the tasks of the blocks of each slot that comes due; a block that leaves in
time only leaves its slot. A deadline expires at most one slot width after its time (or a
millisecond before it, as a loop's timers may).

What a block sees is what `asyncio.timeout` gives it: the task is cancelled at its deadline, the
block's CancelledError becomes TimeoutError on the way out (unless the task was also cancelled
from elsewhere meanwhile, which then goes on as CancelledError), and the task's cancellation
count is restored.
"""

from __future__ import annotations

import asyncio
import heapq
import math
from types import TracebackType

GRANULARITY_MS = 5  # the narrowest slot
# A deadline's slot is the narrowest power of two times 5 ms at least 1/_SLOTS_PER_DELAY of its
# length wide (so under 2/_SLOTS_PER_DELAY of it).
_SLOTS_PER_DELAY = 64
# A loop's timer may fire up to a millisecond early (its clock is read in milliseconds).
_EARLY_MS = 1
# Past this many wheels, those of closed loops and those holding no block are dropped (a test
# suite runs many loops; a dropped wheel's pending timer finds nothing to expire).
_WHEELS_MAX = 16


class Deadline:
    """`async with deadline(seconds):` (see the module's docstring)."""

    __slots__ = ("_delay", "_task", "_cancelling", "_wheel", "_slot", "_expired")

    def __init__(self, delay: float | None) -> None:
        self._delay = delay
        self._expired = False
        self._wheel: _Wheel | None = None
        self._slot = 0

    async def __aenter__(self) -> Deadline:
        task = asyncio.current_task()
        if task is None:
            raise RuntimeError("a deadline is kept inside a task")
        self._task = task
        self._cancelling = task.cancelling()
        if self._delay is not None:
            self._wheel = wheel = _wheel(asyncio.get_running_loop())
            self._slot = wheel.add(self, self._delay)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if self._wheel is not None:
            self._wheel.remove(self, self._slot)
        if (
            self._expired
            and self._task.uncancel() <= self._cancelling
            and exc_type is asyncio.CancelledError
        ):
            raise TimeoutError from exc

    def expired(self) -> bool:
        """Whether the deadline passed (and cancelled the block's task)."""
        return self._expired

    def _expire(self) -> None:
        self._expired = True
        self._task.cancel()


def deadline(delay: float | None) -> Deadline:
    """A block bounded to `delay` seconds (None: unbounded), like `asyncio.timeout(delay)`."""
    return Deadline(delay)


class _Wheel:
    """One loop's blocks by slot (the slot's time, in loop milliseconds), and the one timer for
    the earliest slot."""

    __slots__ = ("loop", "slots", "due", "handle", "armed")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        # A slot stays until it comes due, emptied or not: its number is pushed on `due` once.
        self.slots: dict[int, set[Deadline]] = {}
        self.due: list[int] = []  # a heap of the slots' times
        self.handle: asyncio.TimerHandle | None = None
        self.armed = 0  # the slot the timer is armed for (0: none)

    def add(self, block: Deadline, delay: float) -> int:
        width = _widths.get(delay) or _width(delay)
        slot = -(-math.ceil((self.loop.time() + delay) * 1000) // width) * width
        members = self.slots.get(slot)
        if members is None:
            members = self.slots[slot] = set()
            heapq.heappush(self.due, slot)
            if not self.armed or slot < self.armed:
                self._arm(slot)
        members.add(block)
        return slot

    def remove(self, block: Deadline, slot: int) -> None:
        members = self.slots.get(slot)
        if members is not None:
            members.discard(block)

    def _arm(self, slot: int) -> None:
        if self.handle is not None:
            self.handle.cancel()
        self.armed = slot
        self.handle = self.loop.call_at(slot / 1000, self._fire)

    def _fire(self) -> None:
        self.handle, self.armed = None, 0
        now = self.loop.time() * 1000 + _EARLY_MS
        due, slots = self.due, self.slots
        while due and due[0] <= now:
            for block in slots.pop(heapq.heappop(due), ()):
                block._expire()
        if due:
            self._arm(due[0])


_widths: dict[float, int] = {}


def _width(delay: float) -> int:
    """The slot width (ms) of a deadline `delay` seconds long."""
    width = GRANULARITY_MS
    while width * _SLOTS_PER_DELAY < delay * 1000:
        width *= 2
    if len(_widths) < 256:
        _widths[delay] = width
    return width


_wheels: dict[int, _Wheel] = {}


def _wheel(loop: asyncio.AbstractEventLoop) -> _Wheel:
    wheel = _wheels.get(id(loop))
    if wheel is None or wheel.loop is not loop:
        if len(_wheels) >= _WHEELS_MAX:
            for key, found in list(_wheels.items()):
                if found.loop.is_closed() or not any(found.slots.values()):
                    del _wheels[key]
        wheel = _wheels[id(loop)] = _Wheel(loop)
    return wheel
