"""One guest through its fake agent: batching, outcomes on the wire, health, replays, its topology."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import anyio
import pytest
from qga_fakes import FakeAgent, FakeMonitor, FakeVM, fake_vms

from hotplugd import Action, OnlineResult, Outcome, State, Topology
from hotplugd.testing import ManualClock, wait_until
from hotplugd_qga.guest import GuestLink
from hotplugd_qga.settings import GuestSettings, Settings

pytestmark = pytest.mark.asyncio


def link(vm: FakeVM, clock: Any = None, **options: Any) -> GuestLink:
    guest = GuestSettings(vm.name, str(vm.agent.path))
    settings = Settings(guests=(guest,), **options)
    return GuestLink(guest, settings, **({"clock": clock} if clock else {}))


async def online_all(guest: GuestLink, indices: list[int]) -> dict[int, OnlineResult]:
    results: dict[int, OnlineResult] = {}

    async def one(phys: int) -> None:
        results[phys] = await guest.online(phys)

    async with anyio.create_task_group() as tg:
        for phys in indices:
            tg.start_soon(one, phys)
    return results


async def test_calls_waiting_behind_a_batch_go_together_in_the_next(tmp_path: Path) -> None:
    async with fake_vms(tmp_path) as [vm]:
        vm.agent.add(range(32, 36))
        guest = link(vm)
        await guest.scan()
        vm.agent.hold_sets()
        results: dict[int, OnlineResult] = {}

        async def one(phys: int) -> None:
            results[phys] = await guest.online(phys)

        async with anyio.create_task_group() as tg:
            tg.start_soon(one, 32)
            await wait_until(lambda: len(vm.agent.set_calls()) == 1, what="the first batch in flight")
            for phys in (33, 34, 35):
                tg.start_soon(one, phys)
            await wait_until(lambda: len(guest._waiting) == 3, what="three callers waiting")
            vm.agent.release_sets()
        assert vm.agent.set_calls() == [[32], [33, 34, 35]]
        assert {p: r.outcome for p, r in results.items()} == dict.fromkeys(range(32, 36), Outcome.ONLINED)
        assert vm.agent.online_indices() == set(range(32, 36)) and guest.batches == 2


async def test_max_batch_splits_batches(tmp_path: Path) -> None:
    async with fake_vms(tmp_path) as [vm]:
        vm.agent.add(range(32, 37))
        guest = link(vm, max_batch=2)
        await guest.scan()
        results = await online_all(guest, list(range(32, 37)))
        assert all(r.outcome is Outcome.ONLINED for r in results.values())
        calls = vm.agent.set_calls()
        assert max(map(len, calls)) <= 2 and sorted(sum(calls, [])) == list(range(32, 37))


async def test_each_answer_maps_to_its_block(tmp_path: Path) -> None:
    async with fake_vms(tmp_path) as [vm]:
        vm.agent.add([32, 33, 35])
        vm.agent.add([36], online=True)
        vm.agent.script[33] = ("operation-failed", 22)
        vm.agent.script[35] = ("operation-failed", 16)  # EBUSY
        guest = link(vm, verify=True)
        await guest.scan()
        results = await online_all(guest, [32, 33, 34, 35, 36])
        assert {p: (r.outcome, r.errno) for p, r in results.items()} == {
            32: (Outcome.ONLINED, None), 33: (Outcome.PERMANENT, 22), 34: (Outcome.GONE, 2),
            35: (Outcome.TRANSIENT, 16), 36: (Outcome.ALREADY_ONLINE, None)}
        assert len(vm.agent.commands("guest-get-memory-blocks")) >= 2  # scanned, then read back


async def test_by_default_no_read_back(tmp_path: Path) -> None:
    async with fake_vms(tmp_path) as [vm]:
        vm.agent.add([32])
        guest = link(vm)
        await guest.scan()
        listings = len(vm.agent.commands("guest-get-memory-blocks"))
        assert (await guest.online(32)).outcome is Outcome.ONLINED
        assert len(vm.agent.commands("guest-get-memory-blocks")) == listings


async def test_a_silent_agent_fails_fast_until_its_down_time_is_over(tmp_path: Path) -> None:
    clock = ManualClock()
    async with fake_vms(tmp_path) as [vm]:
        vm.agent.add([32, 33, 34])
        guest = link(vm, clock, timeout=0.2, online_timeout_per_block=0.0, reconnect_interval=1.0)
        await guest.scan()
        vm.agent.pause()
        first = await guest.online(32)
        assert first.outcome is Outcome.TRANSIENT and "no reply" in first.detail
        sent = len(vm.agent.requests)
        second = await guest.online(33)
        assert second.outcome is Outcome.TRANSIENT and len(vm.agent.requests) == sent  # no I/O while down
        assert not guest.available
        vm.agent.resume()
        clock.advance(1.0)
        assert (await guest.online(33)).outcome is Outcome.ONLINED
        # It was down: the next listing announces its offline blocks again (the scheduler may have given up).
        events = await guest.refresh()
        replayed = [(e.action, e.index, e.synthetic) for e in events]
        assert (Action.ONLINE, 32, False) in replayed  # the late batch did online it
        assert (Action.ADD, 34, True) in replayed


async def test_a_cancelled_sender_leaves_the_others_to_send(tmp_path: Path) -> None:
    async with fake_vms(tmp_path) as [vm]:
        vm.agent.add([32, 33])
        guest = link(vm)
        await guest.scan()
        vm.agent.hold_sets()
        results: dict[int, OnlineResult] = {}

        async def one(phys: int) -> None:
            results[phys] = await guest.online(phys)

        async with anyio.create_task_group() as tg:
            with anyio.CancelScope() as first:
                async with anyio.create_task_group() as inner:
                    inner.start_soon(one, 32)  # the sender of the first batch, cancelled below
                    await wait_until(lambda: vm.agent.set_calls() == [[32]], what="32 in flight")
                    tg.start_soon(one, 33)  # waits behind it
                    await wait_until(lambda: len(guest._waiting) == 1, what="33 waiting")
                    first.cancel()
            vm.agent.release_sets()
        assert set(results) == {33} and results[33].outcome is Outcome.ONLINED
        assert vm.agent.set_calls()[-1] == [33]


async def test_port_events_take_the_guest_down_and_up(tmp_path: Path) -> None:
    async with fake_vms(tmp_path) as [vm]:
        vm.agent.add([32])
        guest = link(vm)
        await guest.scan()
        guest.port_changed(False)
        assert (await guest.online(32)).outcome is Outcome.TRANSIENT
        guest.port_changed(True)
        events = await guest.refresh()
        assert [(e.action, e.synthetic) for e in events] == [(Action.ADD, True)]
        assert (await guest.online(32)).outcome is Outcome.ONLINED


async def test_a_request_lost_to_an_agent_restart_is_given_up_and_the_guest_stays_up(tmp_path: Path) -> None:
    async with fake_vms(tmp_path) as [vm]:
        vm.agent.add([32, 33])
        guest = link(vm, timeout=60)
        await guest.scan()
        vm.agent.pause()  # the agent dies holding the request
        with anyio.fail_after(5):  # far below the 60 s timeout
            async with anyio.create_task_group() as tg:
                results: list[OnlineResult] = []

                async def online() -> None:
                    results.append(await guest.online(32))

                tg.start_soon(online)
                await wait_until(lambda: vm.agent.commands("guest-set-memory-blocks"), what="the request sent")
                guest.port_changed(True)  # QEMU: the agent's port opened again (a new agent)
        assert results[0].outcome is Outcome.TRANSIENT and guest.available and guest.failures == 0
        vm.agent.resume()
        assert (await guest.online(33)).outcome is Outcome.ONLINED


async def test_scan_reads_blocks_vcpus_and_memory(tmp_path: Path) -> None:
    async with fake_vms(tmp_path) as [vm]:
        vm.agent.block_size = 256 << 20
        vm.agent.vcpus = 3
        vm.agent.add([0, 1], online=True)
        vm.agent.add([32])
        guest = link(vm)
        blocks = await guest.scan()
        assert [(b.domain, b.index, b.node, b.size, b.state) for b in blocks] == [
            ("vm0", 0, 0, 256 << 20, State.ONLINE), ("vm0", 1, 0, 256 << 20, State.ONLINE),
            ("vm0", 32, 0, 256 << 20, State.OFFLINE)]
        assert (guest.vcpus, guest.mem_available, guest.auto_online) == (3, 1024000 * 1024, "offline")
        assert guest.topology() == Topology({0: 3}, 1024000 * 1024, 256 << 20, kernel_onlines=False)
        assert await guest.read_auto_online() == "offline"


async def test_a_guest_whose_kernel_onlines_says_so_in_its_topology(tmp_path: Path) -> None:
    async with fake_vms(tmp_path) as [vm]:
        vm.agent.files["/sys/devices/system/memory/auto_online_blocks"] = "online_movable\n"
        guest = link(vm)
        await guest.scan()
        assert guest.topology().kernel_onlines


async def test_without_file_commands_or_vcpus_the_topology_falls_back(tmp_path: Path) -> None:
    async with fake_vms(tmp_path) as [vm]:
        vm.agent.files.clear()  # guest-file-open fails: no meminfo, no auto_online_blocks
        vm.agent.blocked.add("guest-get-vcpus")
        vm.agent.add([32])
        guest = link(vm)
        assert [b.index for b in await guest.scan()] == [32]
        assert guest.topology() == Topology({0: 1}, 0, 128 << 20, kernel_onlines=False)


async def test_one_batch_per_run_of_blocks(tmp_path: Path) -> None:
    async with fake_vms(tmp_path) as [vm]:
        vm.agent.add(range(32, 42))
        guest = link(vm, max_batch=8)
        await guest.scan()
        results = await guest.online_many(list(range(32, 42)))
        assert [r.outcome for r in results] == [Outcome.ONLINED] * 10
        assert vm.agent.set_calls() == [list(range(32, 40)), [40, 41]]


async def test_the_wait_after_a_failure_doubles_up_to_reconnect_max(tmp_path: Path) -> None:
    clock = ManualClock()
    guest = link(FakeVM("ghost", FakeAgent(tmp_path / "none.sock"), FakeMonitor(tmp_path / "m.sock")), clock,
                 reconnect_interval=1.0, reconnect_max=5.0)
    waits = []
    for _ in range(5):
        clock.advance(100)
        await guest.scan()
        waits.append(guest.down_until - clock())
    assert waits == [1.0, 2.0, 4.0, 5.0, 5.0]
    assert guest.failures == 5


async def test_a_guest_that_does_not_answer_scans_as_empty(tmp_path: Path) -> None:
    guest = GuestLink(GuestSettings("ghost", str(tmp_path / "none.sock")),
                      Settings(guests=(GuestSettings("ghost", str(tmp_path / "none.sock")),)))
    assert await guest.scan() == []
    assert not guest.available and await guest.refresh() == []
