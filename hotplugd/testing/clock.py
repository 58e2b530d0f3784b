"""Time control for tests: a manual clock for the scheduler, and a bounded wait for conditions."""

from __future__ import annotations

from collections.abc import Callable

import anyio


class ManualClock:
    """A monotonic clock that only moves when the test says so (pass as ``clock=``)."""

    def __init__(self, start: float = 1000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


async def wait_until(condition: Callable[[], bool], timeout: float = 10.0, what: str = "condition") -> None:
    """Poll ``condition`` on the event loop; fail the test if it does not hold within ``timeout``."""
    with anyio.move_on_after(timeout):
        while not condition():
            await anyio.sleep(0.001)
        return
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")
