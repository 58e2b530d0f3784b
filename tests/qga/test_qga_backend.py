"""The qga backend over fake guests: QMP events → add events, fast polling while memory grows,
monitor loss, the fallback poll, topology and conflicts, and the real Daemon onlining two guests."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from qga_fakes import FakeVM, fake_vms
from qga_run import started

from hotplugd import Action, BlockEvent, Rescan, State, ZoneRequest
from hotplugd.testing import running, wait_until
from hotplugd_qga import QgaBackend, parse

pytestmark = pytest.mark.asyncio

#: Long enough that only an event (or fast polling) can explain a prompt add.
NEVER = 3600


def backend(vms: list[FakeVM], qmp: bool = True, **options: Any) -> QgaBackend:
    return QgaBackend(parse({"guest": [vm.table(qmp) for vm in vms], "poll_interval": NEVER, **options}))


def adds(seen: list[BlockEvent | Rescan]) -> dict[tuple[str, int], State]:
    """(guest, phys_index) → state of every add event."""
    return {(e.domain, e.index): e.block.state for e in seen
            if isinstance(e, BlockEvent) and e.action is Action.ADD and e.block is not None}


async def test_a_dimm_event_brings_the_new_blocks_as_adds(tmp_path: Path) -> None:
    async with fake_vms(tmp_path, 2) as vms:
        vms[1].agent.add(range(0, 8), online=True)
        b = backend(vms)
        async with started(b) as seen:
            await vms[1].monitor.negotiated.wait()
            vms[1].agent.add(range(32, 40))
            await vms[1].monitor.dimm_added()
            await wait_until(lambda: len(adds(seen)) == 8, what="8 adds from guest 1")
        assert adds(seen) == {("vm1", p): State.OFFLINE for p in range(32, 40)}
        block = next(e.block for e in seen if isinstance(e, BlockEvent) and e.block is not None)
        assert (block.domain, block.node, block.size, block.valid_zones) == ("vm1", 0, 128 << 20, ())
        assert vms[1].monitor.capabilities == ["oob"]  # negotiated by qemu.qmp, as QEMU offered


async def test_after_a_virtio_mem_event_fast_polling_finds_later_blocks(tmp_path: Path) -> None:
    """virtio-mem plugs 1 GiB, waits for it to be onlined, plugs more: one event, many listings."""
    async with fake_vms(tmp_path) as [vm]:
        b = backend([vm], resize_poll_interval=0.01, resize_quiet=30)
        async with started(b) as seen:
            await vm.monitor.negotiated.wait()
            vm.agent.add(range(32, 40))
            await vm.monitor.emit("MEMORY_DEVICE_SIZE_CHANGE", {"id": "vm0", "size": 1 << 30, "qom-path": "/m/vm0"})
            await wait_until(lambda: len(adds(seen)) == 8, what="the first GiB")
            vm.agent.add(range(40, 48))  # no event this time (QEMU sends at most one a second)
            await wait_until(lambda: len(adds(seen)) == 16, what="the second GiB, by polling")


async def test_without_a_monitor_the_fallback_poll_finds_blocks(tmp_path: Path) -> None:
    async with fake_vms(tmp_path) as [vm]:
        b = backend([vm], qmp=False, poll_interval=0.02)
        async with started(b) as seen:
            vm.agent.add(range(32, 34))
            await wait_until(lambda: len(adds(seen)) == 2, what="adds from polling")


async def test_a_lost_monitor_is_reconnected_and_the_guest_polled(tmp_path: Path) -> None:
    async with fake_vms(tmp_path) as [vm]:
        b = backend([vm], reconnect_interval=0.02)
        async with started(b) as seen:
            await vm.monitor.negotiated.wait()
            await vm.monitor.drop()  # QEMU's monitor went away: events may be lost meanwhile
            vm.agent.add(range(32, 34))
            await wait_until(lambda: len(adds(seen)) == 2, what="adds after reconnecting")
            assert vm.monitor.negotiated.is_set()


async def test_vserport_events_of_the_agent_port(tmp_path: Path) -> None:
    async with fake_vms(tmp_path) as [vm]:
        vm.agent.add([32])
        b = backend([vm])
        async with started(b) as seen:
            await vm.monitor.negotiated.wait()
            await vm.monitor.emit("VSERPORT_CHANGE", {"id": "other", "open": False})  # not the agent's port
            await vm.monitor.emit("VSERPORT_CHANGE", {"id": "qgaport", "open": False})
            await wait_until(lambda: not b.guests["vm0"].available, what="the guest marked down")
            block = (await b.scan()).blocks[0]
            assert (await b.online(block, ZoneRequest.AUTO)).outcome.value == "transient"
            await vm.monitor.emit("VSERPORT_CHANGE", {"id": "qgaport", "open": True})
            await wait_until(lambda: any(getattr(e, "synthetic", False) for e in seen), what="the replayed add")
            assert (await b.online(block, ZoneRequest.AUTO)).outcome.value == "onlined"


async def test_each_guest_is_a_domain_with_its_own_topology(tmp_path: Path) -> None:
    async with fake_vms(tmp_path, 2) as vms:
        vms[0].agent.add(range(0, 4), online=True)
        vms[0].agent.vcpus = 4
        vms[1].agent.block_size = 256 << 20
        vms[1].agent.files["/proc/meminfo"] = "MemAvailable: 512000 kB\n"
        vms[1].agent.add([0], online=True)
        vms[1].agent.add([32])
        vms[1].agent.files["/sys/devices/system/memory/auto_online_blocks"] = "online_movable\n"
        b = backend(vms, concurrency=2, guest=[vms[0].table(), {**vms[1].table(), "concurrency": 1}],
                    parallel_guests=1)
        assert b.census() is None  # nothing read yet
        assert (b.concurrency, b.domain_concurrency("vm0"), b.domain_concurrency("vm1")) == (2, 2, 1)
        assert b.domain_concurrency("unknown") == 2 and b.parallel_domains == 1 and b.batch_size == 256
        conflicts = await b.conflicts()
        assert len(conflicts) == 1 and "vm1" in conflicts[0] and "online_movable" in conflicts[0]
        scan = await b.scan()
        assert set(scan.topology.domains) == {"vm0", "vm1"}
        vm0, vm1 = scan.topology.for_domain("vm0"), scan.topology.for_domain("vm1")
        assert (vm0.cpus_per_node, vm0.mem_available, vm0.block_size, vm0.kernel_onlines) == (
            {0: 4}, 1024000 * 1024, 128 << 20, False)
        assert (vm1.cpus_per_node, vm1.mem_available, vm1.block_size, vm1.kernel_onlines) == (
            {0: 2}, 512000 * 1024, 256 << 20, True)
        assert await b.domain_topology("vm1") == vm1  # a guest's own, without the others'
        assert await b.domain_topology("unknown") == scan.topology.for_domain("unknown")
        assert [(x.domain, x.index, x.node, x.state) for x in scan.blocks] == [
            *[("vm0", i, 0, State.ONLINE) for i in range(4)], ("vm1", 0, 0, State.ONLINE),
            ("vm1", 32, 0, State.OFFLINE)]
        assert sorted((x.domain, x.index) for x in b.census() or []) == sorted((x.domain, x.index) for x in scan.blocks)
        await b.stop()


async def test_online_many_sends_one_batch_per_guest_and_a_gone_guest_is_gone(tmp_path: Path) -> None:
    async with fake_vms(tmp_path, 2) as vms:
        for vm in vms:
            vm.agent.add(range(32, 36))
        b = backend(vms)
        blocks = (await b.scan()).blocks
        stranger = blocks[0].__class__(32, 128 << 20, domain="vm9")
        results = await b.online_many([(x, ZoneRequest.AUTO) for x in [*blocks, stranger]])
        assert [r.outcome.value for r in results] == ["onlined"] * 8 + ["gone"]
        assert [vm.agent.set_calls() for vm in vms] == [[[32, 33, 34, 35]]] * 2
        await b.stop()


async def test_zone_requests_are_onlined_as_auto_and_said_once(tmp_path: Path, hotplugd_logs: list) -> None:
    async with fake_vms(tmp_path) as [vm]:
        vm.agent.add([32, 33])
        b = backend([vm])
        blocks = (await b.scan()).blocks
        for block in blocks:
            assert (await b.online(block, ZoneRequest.MOVABLE)).outcome.value == "onlined"
        await b.stop()
    assert [e["event"] for e in hotplugd_logs].count("qga_zone_ignored") == 1
    assert vm.agent.online_indices() == {32, 33}


# -- the real daemon -----------------------------------------------------------------------


async def test_the_daemon_onlines_coldplug_and_hot_added_blocks_in_two_guests(
        tmp_path: Path, make_daemon: Any, hook_recorder: Any) -> None:
    """The same phys-indices in two guests are two domains' blocks; each guest's phase batches its run."""
    async with fake_vms(tmp_path, 2) as vms:
        for vm in vms:
            vm.agent.add(range(0, 8), online=True)
        vms[0].agent.add(range(32, 36))  # offline at start: coldplug
        config = {"plugins": {"qga": {"guest": [vm.table() for vm in vms], "poll_interval": NEVER,
                                      "resize_poll_interval": 0.01, "resize_quiet": 0.2}}}
        daemon = make_daemon("qga", config, entry_points=True, settle=0.2)
        assert daemon.backend.domain_concurrency("vm0") == 1 and daemon.backend.parallel_domains == 0
        async with running(daemon):
            await wait_until(lambda: vms[0].agent.online_indices() >= set(range(32, 36)), what="coldplug")
            for vm in vms:
                await vm.monitor.negotiated.wait()
                vm.agent.add(range(40, 48))
            for vm in vms:
                await vm.monitor.dimm_added()
            await wait_until(lambda: all(vm.agent.online_indices() >= set(range(40, 48)) for vm in vms),
                             what="the hot-added blocks of both guests online")
            daemon.scheduler.stop()
        assert all(all(vm.agent.blocks.values()) for vm in vms)
        outcomes = {(r.block.domain, r.block.index): r.result.outcome.value for r in hook_recorder.reports}
        assert outcomes == {**{("vm0", p): "onlined" for p in [*range(32, 36), *range(40, 48)]},
                            **{("vm1", p): "onlined" for p in range(40, 48)}}
        assert {r.block.node for r in hook_recorder.reports} == {0}
        assert {p.domain for p in hook_recorder.phases} == {"vm0", "vm1"}
        assert all(p.workers == {0: 1} for p in hook_recorder.phases)  # one guest kernel: one worker
        # a phase's run of blocks went in one guest-set-memory-blocks: no more calls than phases
        for vm in vms:
            assert len(vm.agent.set_calls()) == sum(1 for p in hook_recorder.phases if p.domain == vm.name)
        assert sorted(daemon.scheduler.domains) == ["vm0", "vm1"]
