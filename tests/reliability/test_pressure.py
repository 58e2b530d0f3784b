"""Pressure: when the simulated host's MemAvailable is low, deferral is skipped and blocks go online at once.

Waiting blocks hold their memmap (1/64 of their size) out of RAM the host is
short of. The same burst, the same timers (``settle`` and ``max_defer`` of ten
minutes, no byte bound): with MemAvailable low the phase starts at once on
the memmap share; with plenty of it the daemon defers as configured.
"""

from __future__ import annotations

import pytest

from hotplugd import State
from hotplugd.testing import HookRecorder

from .simulated import FREE, run_to_the_end, simulated_daemon

pytestmark = [pytest.mark.reliability, pytest.mark.asyncio]

BURST = [{"kind": "dimm", "size": "1GiB", "node": 0}, {"kind": "dimm", "size": "1GiB", "node": 1}]
#: Deferral that would hold the burst for ten minutes.
PATIENT = {"settle": 600, "max_defer": 600, "max_offline_bytes": "1TiB"}


async def test_low_mem_available_skips_deferral() -> None:
    recorder = HookRecorder()
    daemon = simulated_daemon({**FREE, "mem_available": "64MiB", "scenario": BURST}, recorder, **PATIENT)
    await run_to_the_end(daemon, timeout=30)  # far below the ten minutes deferral would take
    assert set(recorder.triggers()) == {"memmap_share"}
    assert len(recorder.reports) == 16 and all(r.result.outcome.success for r in recorder.reports)
    assert all(b.state is State.ONLINE for b in daemon.backend.host.blocks.values())


async def test_plenty_of_mem_available_defers() -> None:
    """The control: the same burst waits for its timers (shortened here so the test ends)."""
    recorder = HookRecorder()
    timers = {**PATIENT, "settle": 0.05, "max_defer": 0.5}
    daemon = simulated_daemon({**FREE, "mem_available": "16GiB", "scenario": BURST}, recorder, **timers)
    await run_to_the_end(daemon, timeout=30)
    assert set(recorder.triggers()) <= {"settle", "max_defer"}
    assert len(recorder.reports) == 16
