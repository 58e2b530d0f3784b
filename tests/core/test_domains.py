"""Domains: blocks of several kernels (a hypervisor's guests) through one daemon.

Each domain has its own queue, deferral and workers, capped by the backend's
concurrency for that domain; domains run at the same time, at most
``parallel_domains`` of them; ``parallel_hotplug_ratio`` applies inside a domain.
"""

from __future__ import annotations

import concurrent.futures
import threading
import time
from collections.abc import AsyncIterator, Iterable

import anyio
import pytest

from hotplugd.model import (
    Action,
    Block,
    BlockEvent,
    OnlineResult,
    Rescan,
    Scan,
    State,
    Topology,
    ZoneRequest,
)
from hotplugd.observe.metrics import Metrics
from hotplugd.plugin.backend import Backend
from hotplugd.testing import FakeHost, ManualClock, running, sample, wait_until


class Guests(Backend):
    """One FakeHost per domain; the default topology is a host's, each guest has its own."""

    def __init__(self, hosts: dict[str, FakeHost], per_domain: dict[str, int], parallel_domains: int = 0) -> None:
        self.hosts = hosts
        self.per_domain = per_domain
        self.concurrency = 1
        self.parallel_domains = parallel_domains
        self.send, self.recv = anyio.create_memory_object_stream[BlockEvent | Rescan](1000)
        self.running = 0
        self.max_running = 0  # online calls in flight across every domain

    def domain_concurrency(self, domain: str) -> int:
        return self.per_domain.get(domain, 1)

    async def scan(self) -> Scan:
        return Scan([b for h in self.hosts.values() for b in h.blocks.values()], await self.topology())

    async def topology(self) -> Topology:
        return Topology({0: 1}, 1 << 40, 128 << 20, domains={n: h.topology() for n, h in self.hosts.items()})

    def events(self) -> AsyncIterator[BlockEvent | Rescan]:
        return self._events()

    async def _events(self) -> AsyncIterator[BlockEvent | Rescan]:
        async with self.recv:
            async for event in self.recv:
                yield event

    async def online(self, block: Block, zone: ZoneRequest) -> OnlineResult:
        self.running += 1
        self.max_running = max(self.max_running, self.running)
        try:
            return await self.hosts[block.domain].online(block, zone)
        finally:
            self.running -= 1

    def census(self) -> Iterable[Block]:
        return [b for h in self.hosts.values() for b in h.blocks.values()]

    def add(self, domain: str, *indices: int, together: bool = False) -> None:
        """Send adds; ``together``: every one but the last says ``more`` follow."""
        for n, index in enumerate(indices, 1):
            block = self.hosts[domain].add(index)
            more = together and n < len(indices)
            self.send.send_nowait(BlockEvent(Action.ADD, index, block, domain=domain, more=more))


def guests(names: Iterable[str], cpus: int = 1, cost: float = 0.0) -> dict[str, FakeHost]:
    hosts = {n: FakeHost({0: cpus}, domain=n) for n in names}
    for host in hosts.values():
        host.cost = cost
    return hosts


@pytest.mark.asyncio
async def test_the_same_block_index_in_two_domains_is_two_blocks(make_daemon, hotplugd_metrics):
    backend = Guests(guests(["vm1", "vm2"]), {})
    daemon = make_daemon(backend)
    backend.add("vm1", 32, 33)
    backend.add("vm2", 32)
    backend.send.close()
    await daemon.run(until_idle=True)
    assert backend.hosts["vm1"].online_indices() == {32, 33}
    assert backend.hosts["vm2"].online_indices() == {32}
    onlined = {d: sample(hotplugd_metrics, "hotplugd_blocks_onlined_total",
                         {"domain": d, "node": "0", "zone": "Normal"})
               for d in ("vm1", "vm2")}
    assert onlined == {"vm1": 2, "vm2": 1}


@pytest.mark.asyncio
async def test_serial_domains_online_in_parallel_with_one_call_each(make_daemon, hook_recorder):
    backend = Guests(guests(["a", "b", "c"], cost=0.02), {})
    daemon = make_daemon(backend)  # defaults: defer "auto", ratio 1
    for name in backend.hosts:
        backend.add(name, *range(4))
    backend.send.close()
    await daemon.run(until_idle=True)
    assert all(h.max_running == 1 for h in backend.hosts.values())  # each guest's kernel: one at a time
    assert backend.max_running == 3  # but every guest at once
    assert {p.domain for p in hook_recorder.phases} == {"a", "b", "c"}
    assert set(hook_recorder.triggers()) == {"serial"}  # concurrency 1 in a domain: no deferral


@pytest.mark.asyncio
async def test_parallel_domains_bounds_the_guests_onlining_at_once(make_daemon):
    backend = Guests(guests(["a", "b", "c", "d"], cost=0.02), {}, parallel_domains=2)
    daemon = make_daemon(backend)
    for name in backend.hosts:
        backend.add(name, 1, 2)
    backend.send.close()
    await daemon.run(until_idle=True)
    assert all(h.online_indices() == {1, 2} for h in backend.hosts.values())
    assert backend.max_running == 2


@pytest.mark.asyncio
async def test_ratio_applies_inside_a_domain_capped_by_its_own_concurrency(make_daemon, hook_recorder):
    backend = Guests(guests(["big", "small"], cpus=4, cost=0.01), {"big": 4, "small": 2})
    daemon = make_daemon(backend, parallel_hotplug_ratio=1, defer="always", settle=0.05)
    backend.add("big", *range(8))
    backend.add("small", *range(8))
    backend.send.close()
    await daemon.run(until_idle=True)
    workers = {p.domain: p.workers for p in hook_recorder.phases}
    assert workers == {"big": {0: 4}, "small": {0: 2}}
    assert backend.hosts["big"].max_running == 4 and backend.hosts["small"].max_running == 2


@pytest.mark.asyncio
async def test_a_deferring_domain_does_not_hold_back_another(make_daemon):
    backend = Guests(guests(["waits", "serial"], cpus=4), {"waits": 4, "serial": 1})
    daemon = make_daemon(backend, settle=3600, max_defer=3600)
    async with running(daemon, until_idle=False):
        backend.add("waits", 1, 2)
        backend.add("serial", 1, 2)
        await wait_until(lambda: backend.hosts["serial"].online_indices() == {1, 2})
        assert backend.hosts["waits"].online_indices() == set()  # still settling, alone
        assert len(daemon.scheduler.domain("waits").queue) == 2 and daemon.scheduler.pending == 2


@pytest.mark.asyncio
async def test_a_removal_in_one_domain_leaves_the_same_index_elsewhere(make_daemon):
    backend = Guests(guests(["a", "b"], cpus=4), {"a": 4, "b": 4})
    daemon = make_daemon(backend, settle=3600, max_defer=3600)
    async with running(daemon, until_idle=False):
        backend.add("a", 7)
        backend.add("b", 7)
        await wait_until(lambda: daemon.scheduler.pending == 2)
        backend.send.send_nowait(BlockEvent(Action.REMOVE, 7, domain="a"))
        await wait_until(lambda: daemon.scheduler.pending == 1)
        assert 7 in daemon.scheduler.domain("b").queue


def test_the_domain_label_is_bounded():
    metrics = Metrics(max_domains=2)
    labels = [metrics.domain_label(name) for name in ("host", "vm1", "vm2", "vm3", "vm1")]
    assert labels == ["host", "vm1", "other", "other", "vm1"]


class _SlowDict(dict):
    """A dict whose ``len`` hands the GIL over after counting: a check-then-insert race shows every time."""

    def __len__(self) -> int:
        n = super().__len__()
        time.sleep(0.001)
        return n


def test_the_domain_label_bound_holds_across_threads():
    metrics = Metrics(max_domains=1)
    metrics._domain_labels = _SlowDict()
    names = [f"vm{i}" for i in range(8)]
    together = threading.Barrier(len(names))

    def label(name: str) -> str:
        together.wait()
        return metrics.domain_label(name)

    with concurrent.futures.ThreadPoolExecutor(len(names)) as pool:
        labels = list(pool.map(label, names))
    assert sum(label != "other" for label in labels) == 1
    assert len(metrics._domain_labels) == 1


def test_a_topology_describes_each_domain_or_falls_back_to_its_own():
    guest = Topology({0: 2}, 1 << 30, 128 << 20, kernel_onlines=True)
    host = Topology({0: 16, 1: 16}, 1 << 40, 128 << 20, domains={"vm1": guest})
    assert host.for_domain("vm1") is guest
    assert host.for_domain("host") is host


@pytest.mark.asyncio
async def test_a_domain_gone_from_the_scan_is_dropped_and_may_come_back(make_daemon):
    backend = Guests(guests(["stays", "goes"]), {})
    daemon = make_daemon(backend)
    async with running(daemon, until_idle=False):
        backend.add("goes", 1)
        backend.add("stays", 1)
        await wait_until(lambda: daemon.scheduler.onlined == 2)
        gone = backend.hosts.pop("goes")  # the guest shut down
        daemon.scheduler.request_rescan("request")
        await wait_until(lambda: "goes" not in daemon.scheduler.domains)
        assert "stays" in daemon.scheduler.domains
        backend.hosts["goes"] = gone  # and started again, with memory added
        backend.add("goes", 2)
        await wait_until(lambda: gone.online_indices() == {1, 2})


@pytest.mark.asyncio
@pytest.mark.parametrize("together", [True, False])
async def test_adds_sent_together_make_one_phase(make_daemon, hook_recorder, together):
    backend = Guests(guests(["vm1"], cost=0.01), {})
    daemon = make_daemon(backend)
    async with running(daemon, until_idle=False):
        backend.add("vm1", *range(8), together=together)
        await wait_until(lambda: backend.hosts["vm1"].online_indices() == set(range(8)))
    sizes = [p.blocks for p in hook_recorder.phases]
    if together:
        assert sizes == [8]
    else:  # without the promise the first add starts a phase on its own
        assert len(sizes) > 1 and sum(sizes) == 8


class SlowTopology(Guests):
    """Its topology reads after the first (the scan's) wait until ``release`` is set."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.release = anyio.Event()
        self.reads = 0

    async def topology(self) -> Topology:
        self.reads += 1
        if self.reads > 1:
            await self.release.wait()
        return await super().topology()


class OwnTopologies(Guests):
    """Answers a domain's topology alone; counts whole and per-domain reads."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.whole = 0
        self.asked: list[str] = []

    async def topology(self) -> Topology:
        self.whole += 1
        return await super().topology()

    async def domain_topology(self, domain: str) -> Topology:
        self.asked.append(domain)
        return self.hosts[domain].topology()


@pytest.mark.asyncio
async def test_a_domain_refreshes_its_own_topology_alone(make_daemon):
    clock = ManualClock()
    backend = OwnTopologies(guests(["vm1", "vm2"]), {})
    for host in backend.hosts.values():
        host.add(0, state=State.ONLINE)  # booted with a block: the scan knows the guest
    daemon = make_daemon(backend, clock=clock)
    async with running(daemon, until_idle=False):
        assert backend.whole == 1  # the start's scan
        clock.advance(10)  # its topology is stale now
        backend.add("vm2", 1)
        await wait_until(lambda: backend.hosts["vm2"].online_indices() == {0, 1}, what="the block online")
        await wait_until(lambda: backend.asked == ["vm2"], what="vm2's refresh")
        assert backend.whole == 1


@pytest.mark.asyncio
async def test_by_default_a_domains_topology_is_its_part_of_the_whole():
    backend = Guests(guests(["vm1", "vm2"], cpus=3), {})
    assert (await backend.domain_topology("vm2")).cpus_per_node == {0: 3}
    assert (await backend.domain_topology("gone")).cpus_per_node == {0: 1}  # the whole's own


@pytest.mark.asyncio
@pytest.mark.parametrize(("ratio", "waits"), [(1.0, False), (0, False), (2.0, True)])
async def test_only_a_deferring_domain_waits_for_a_fresh_topology(make_daemon, ratio, waits):
    clock = ManualClock()
    backend = SlowTopology(guests(["vm1"]), {"vm1": 1 if ratio < 2 else 4})
    backend.hosts["vm1"].add(0, state=State.ONLINE)  # booted with a block: the scan knows the guest
    daemon = make_daemon(backend, clock=clock, parallel_hotplug_ratio=ratio, settle=0.0)
    async with running(daemon, until_idle=False):
        clock.advance(10)  # the scan's topology is stale now
        backend.add("vm1", 1, 2)
        if waits:  # a decision on MemAvailable: taken on a fresh read, so not before it
            await wait_until(lambda: backend.reads == 2, what="the topology read")
            await anyio.sleep(0.05)
            assert backend.hosts["vm1"].online_indices() == {0}
            backend.release.set()
        await wait_until(lambda: backend.hosts["vm1"].online_indices() == {0, 1, 2}, what="the blocks online")
        assert backend.reads == 2  # refreshed once either way: beside the phase, or before it
        backend.release.set()
