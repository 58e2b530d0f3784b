"""Faults: the simulated host fails 10 % of online calls with EBUSY, ENOMEM, EINVAL, EHWPOISON or "block gone".

Faults are drawn per (seed, block, attempt); a permanent errno sticks to its
block. Every block that can be onlined must end online, every permanent one is
reported exactly once with its errno, and the daemon goes on working.
"""

from __future__ import annotations

import errno

import anyio
import pytest

from hotplugd import Outcome, State
from hotplugd.model import EHWPOISON
from hotplugd.testing import HookRecorder, sample, wait_until

from .simulated import FREE, run_to_the_end, simulated_daemon

pytestmark = [pytest.mark.reliability, pytest.mark.asyncio]

FAULTS = ["EBUSY", "ENOMEM", "EINVAL", "EHWPOISON", "ENOENT"]
PER_NODE = 256


def faulty(seed: int, later: float = 0.0) -> dict:
    """Two DIMM bursts; a third one on node 0 arrives after the first faults were handled."""
    size = f"{PER_NODE * 128 >> 10}GiB"
    steps = [{"kind": "dimm", "size": size, "node": 0}, {"kind": "dimm", "size": size, "node": 1}]
    if later:
        steps.append({"kind": "dimm", "size": "4GiB", "node": 0, "at": later})
    return {**FREE, "fault_rate": 0.1, "fault_errnos": FAULTS, "seed": seed, "scenario": steps}


@pytest.mark.parametrize("seed", [1, 2, 3])
async def test_recoverable_blocks_end_online_permanent_ones_are_reported_once(seed: int) -> None:
    recorder = HookRecorder()
    # A small queue bound: the bursts overflow it, and the rescans that follow must not report a block again.
    daemon = simulated_daemon(faulty(seed, later=0.2), recorder, retry_backoff=0.0001, max_pending_blocks=32)
    await run_to_the_end(daemon)

    host = daemon.backend.host
    added = [b for b in host.blocks.values() if b.index >= 64]  # after the boot blocks
    poisoned = {b.index: b.poisoned for b in added if b.poisoned}
    # every fault kind happened, and the transient ones were retried
    outcomes = {(r.result.outcome, r.result.errno) for r in recorder.reports}
    assert {(Outcome.PERMANENT, errno.EINVAL), (Outcome.PERMANENT, EHWPOISON), (Outcome.GONE, errno.ENOENT)} <= outcomes
    assert sample(daemon.metrics, "hotplugd_online_retries_total") > 0
    assert sample(daemon.metrics, "hotplugd_rescans_total", {"reason": "queue_full"}) > 0

    # recoverable: online; permanent: offline, left alone
    assert all((b.state is State.ONLINE) == (b.index not in poisoned) for b in added)
    assert poisoned and all(code in (errno.EINVAL, EHWPOISON) for code in poisoned.values())

    # each permanent block reported exactly once, with the errno the host gave
    permanent = [r for r in recorder.reports if r.result.outcome is Outcome.PERMANENT]
    assert sorted(r.block.index for r in permanent) == sorted(poisoned)
    assert all(r.result.errno == poisoned[r.block.index] for r in permanent)
    for code in (errno.EINVAL, EHWPOISON):
        count = sum(1 for c in poisoned.values() if c == code)
        labels = {"outcome": "permanent", "errno": str(code)}
        assert sample(daemon.metrics, "hotplugd_online_outcomes_total", labels) == count
    assert daemon.scheduler.host.failed == dict.fromkeys(poisoned, Outcome.PERMANENT)

    # "block gone" is no failure: those blocks are simply no longer there
    gone = {r.block.index for r in recorder.reports if r.result.outcome is Outcome.GONE}
    assert gone and not gone & set(host.blocks)
    # and the daemon went on: the burst that came after the faults was onlined too
    late = [b for b in added if b.index >= 64 + 2 * PER_NODE]
    assert len(late) + sum(1 for i in gone if i >= 64 + 2 * PER_NODE) == 32
    assert all(b.state is State.ONLINE or b.index in poisoned for b in late)


async def test_an_operator_rescan_retries_permanent_failures() -> None:
    """SIGUSR1 asks for a fresh look: a block that failed for good is attempted once more (and reported again)."""
    recorder = HookRecorder()
    daemon = simulated_daemon(faulty(seed=1), recorder, retry_backoff=0.0001)

    def permanent() -> list[int]:
        return sorted(r.block.index for r in recorder.reports if r.result.outcome is Outcome.PERMANENT)

    async with anyio.create_task_group() as tg:
        await tg.start(daemon.run)
        failed: dict = {}
        await wait_until(lambda: daemon.scheduler.source_done and daemon.scheduler.idle, what="the scenario's end")
        failed = dict(daemon.scheduler.host.failed)
        assert failed and sorted(failed) == permanent()
        daemon.scheduler.request_rescan("request")
        await wait_until(lambda: len(permanent()) == 2 * len(failed), what="the retries")
        daemon.scheduler.stop()
    assert permanent() == sorted([*failed, *failed])  # still poisoned: reported once more, not forgotten
    assert daemon.scheduler.host.failed == failed
