"""While the kernel walks a hot-add, hotplugd's turns cost as little as they can: waiting for the kernel reads
no topology (MemAvailable and the knobs, a worker-thread call) at each turn; a takeover, or a reload, does."""

from __future__ import annotations

import anyio
import pytest

from hotplugd.engine.domain import TOPOLOGY_MAX_AGE
from hotplugd.model import Action, BlockEvent
from hotplugd.testing import FakeBackend, FakeHost, ManualClock, running, sample, wait_until

pytestmark = pytest.mark.asyncio
HOST = {"domain": "host", "node": "0", "zone": "Normal"}


async def tick(daemon, clock: ManualClock, seconds: float) -> None:
    clock.advance(seconds)
    daemon.scheduler.wake()
    await anyio.sleep(0.02)


def counting(backend: FakeBackend, clock: ManualClock) -> list[float]:
    """The clock at each topology read of ``backend``."""
    reads: list[float] = []
    real = backend.topology

    async def topology():
        reads.append(clock())
        return await real()

    backend.topology = topology
    return reads


async def test_waiting_for_the_kernels_walk_reads_no_topology_until_a_takeover(make_daemon, hotplugd_metrics):
    clock = ManualClock()
    host = FakeHost(kernel_onlines=True)
    backend = FakeBackend(host)
    reads = counting(backend, clock)
    daemon = make_daemon(backend, clock=clock, kernel_grace_max=10.0)
    async with running(daemon, until_idle=False):
        backend.add(0, 1, 2, 3, 4)
        await wait_until(lambda: len(daemon.scheduler.host.queue) == 5)
        before = len(reads)
        for index in range(4):  # the walk: one block every 4 x TOPOLOGY_MAX_AGE, each turn on a stale topology
            await tick(daemon, clock, 4 * TOPOLOGY_MAX_AGE)
            host.add(index, state=host.blocks[index].state.ONLINE, zones=("Normal",))
            backend.inject(BlockEvent(Action.ONLINE, index))
            await wait_until(lambda i=index: i not in daemon.scheduler.host.queue)
        await wait_until(lambda: sample(hotplugd_metrics, "hotplugd_kernel_onlined_blocks_total", HOST) == 4)
        assert len(reads) == before  # not one read while waiting for the kernel
        await tick(daemon, clock, 10.0)  # its walk stopped short of block 4: hotplugd takes it at the bound
        await wait_until(lambda: 4 in host.online_indices())
        assert len(reads) == before + 1  # the takeover read the topology fresh
        assert [index for index, _ in host.calls] == [4]


async def test_a_reload_has_the_next_decision_read_the_topology(make_daemon):
    clock = ManualClock()
    host = FakeHost(kernel_onlines=True)
    backend = FakeBackend(host)
    reads = counting(backend, clock)
    daemon = make_daemon(backend, clock=clock)
    async with running(daemon, until_idle=False):
        backend.add(0, 1)
        await wait_until(lambda: len(daemon.scheduler.host.queue) == 2)
        await tick(daemon, clock, 4 * TOPOLOGY_MAX_AGE)
        before = len(reads)
        daemon.scheduler.reconfigured()  # what a SIGHUP's reload does after applying the plan again
        await wait_until(lambda: len(reads) == before + 1)
        await tick(daemon, clock, 4 * TOPOLOGY_MAX_AGE)
        assert len(reads) == before + 1  # then waiting for the kernel again reads nothing
        assert host.calls == []
