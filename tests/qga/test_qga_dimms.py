"""A pc-dimm's blocks learned from ACPI_DEVICE_OST and query-memory-devices, not from a listing;
the listing afterwards reconciles, and everything this cannot use falls back to the listing."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import anyio
import pytest
from qga_fakes import BLOCK, FakeVM, fake_vms
from qga_run import started

from hotplugd import Action, BlockEvent, Rescan, State
from hotplugd.testing import running, wait_until
from hotplugd_qga import QgaBackend, parse
from hotplugd_qga.dimms import dimm_blocks, inserted_dimm

#: Long enough that only the DIMM path (or an explicit wake) can explain what happens.
NEVER = 3600
#: The longest resize_quiet: the safety-net listing does not come during the test.
LATE = 600
LISTING = "guest-get-memory-blocks"


def backend(vms: list[FakeVM], **options: Any) -> QgaBackend:
    return QgaBackend(parse({"guest": [vm.table() for vm in vms], "poll_interval": NEVER,
                             "resize_quiet": LATE, **options}))


def events(seen: list[BlockEvent | Rescan]) -> list[tuple[Action, int, State | None]]:
    return [(e.action, e.index, e.block.state if e.block else None) for e in seen if isinstance(e, BlockEvent)]


def listings(vm: FakeVM) -> int:
    return len(vm.agent.commands(LISTING))


# -- the pieces ------------------------------------------------------------------------------


def test_only_a_successful_dimm_insertion_names_a_device() -> None:
    ost = {"device": "dimm0", "slot": "0", "slot-type": "DIMM", "source": 1, "status": 0}
    assert inserted_dimm("ACPI_DEVICE_OST", {"info": ost}) == "dimm0"
    assert inserted_dimm("ACPI_DEVICE_OST", {"info": {**ost, "source": 0}}) == "dimm0"  # bus check
    assert inserted_dimm("ACPI_DEVICE_OST", {"info": {**ost, "status": 1}}) is None  # failed
    assert inserted_dimm("ACPI_DEVICE_OST", {"info": {**ost, "source": 3}}) is None  # an eject request
    assert inserted_dimm("ACPI_DEVICE_OST", {"info": {**ost, "slot-type": "CPU"}}) is None
    assert inserted_dimm("ACPI_DEVICE_OST", {"info": {k: v for k, v in ost.items() if k != "device"}}) is None
    assert inserted_dimm("MEMORY_DEVICE_SIZE_CHANGE", {"id": "vm0", "size": 1 << 30}) is None
    assert inserted_dimm("ACPI_DEVICE_OST", {"info": "garbage"}) is None


def test_a_dimms_blocks_are_those_its_range_covers_whole() -> None:
    def dimm(device: str, addr: int, size: int) -> dict[str, Any]:
        return {"type": "dimm", "data": {"id": device, "addr": addr, "size": size, "slot": 0, "node": 0}}

    reply = [{"type": "virtio-mem", "data": {"id": "dimm0", "memaddr": 0, "size": BLOCK}},
             dimm("dimm0", 32 * BLOCK, 8 * BLOCK), dimm("odd", 40 * BLOCK + 1, 2 * BLOCK), dimm("tiny", 0, BLOCK // 2)]
    assert dimm_blocks(reply, "dimm0", BLOCK) == range(32, 40)
    assert dimm_blocks(reply, "dimm0", 2 * BLOCK) == range(16, 20)  # the guest's own block size
    assert dimm_blocks(reply, "odd", BLOCK) == range(41, 42)
    assert dimm_blocks(reply, "tiny", BLOCK) is None
    assert dimm_blocks(reply, "dimm9", BLOCK) is None
    assert dimm_blocks({"not": "a list"}, "dimm0", BLOCK) is None


# -- the backend -----------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_an_ost_brings_exactly_the_dimms_blocks_without_a_listing(tmp_path: Path) -> None:
    async with fake_vms(tmp_path, 2) as vms:
        for vm in vms:
            vm.agent.add(range(0, 8), online=True)
        b = backend(vms)
        async with started(b) as seen:
            before = [listings(vm) for vm in vms]
            vms[1].hot_add_dimm("dimm0", 32, 8)
            vms[1].monitor.plug_dimm("dimm1", 48, 4, BLOCK)  # another DIMM: not this event's
            await vms[1].monitor.dimm_added("dimm0")
            await wait_until(lambda: len(events(seen)) == 8, what="8 adds")
            await anyio.sleep(0.05)  # room for anything more to arrive
            assert events(seen) == [(Action.ADD, p, State.OFFLINE) for p in range(32, 40)]
            assert {e.domain for e in seen if isinstance(e, BlockEvent)} == {"vm1"}
            assert [listings(vm) for vm in vms] == before
            assert vms[1].monitor.commands == ["query-memory-devices"]
            assert {p: on for p, on in (b.guests["vm1"].snapshot or {}).items() if p >= 32} == dict.fromkeys(
                range(32, 40), False)


@pytest.mark.asyncio
async def test_the_listing_afterwards_reconciles_without_announcing_twice(tmp_path: Path) -> None:
    """The DIMM range claims a block the guest never made (40), and the guest onlined 33 itself."""
    async with fake_vms(tmp_path) as [vm]:
        vm.agent.add(range(0, 8), online=True)
        b = backend([vm], resize_quiet=0.01)
        async with started(b) as seen:
            before = listings(vm)
            vm.hot_add_dimm("dimm0", 32, 9)
            del vm.agent.blocks[40]
            vm.agent.blocks[33] = True
            await vm.monitor.dimm_added()
            await wait_until(lambda: listings(vm) > before, what="the safety-net listing")
            await wait_until(lambda: len(events(seen)) == 11, what="the listing's events")
            b.guests["vm0"].wake()  # and one more listing: nothing new
            await wait_until(lambda: listings(vm) > before + 1, what="another listing")
            await anyio.sleep(0.05)
        assert events(seen) == [*[(Action.ADD, p, State.OFFLINE) for p in range(32, 41)],
                                (Action.REMOVE, 40, None), (Action.ONLINE, 33, None)]
        assert b.guests["vm0"].snapshot == {**dict.fromkeys(range(0, 8), True), **dict.fromkeys(range(32, 40), False),
                                            33: True}


@pytest.mark.asyncio
async def test_blocks_a_listing_found_first_are_not_announced_again(tmp_path: Path) -> None:
    async with fake_vms(tmp_path) as [vm]:
        b = backend([vm])
        async with started(b) as seen:
            vm.hot_add_dimm("dimm0", 32, 4)
            b.guests["vm0"].wake()
            await wait_until(lambda: len(events(seen)) == 4, what="the listing's adds")
            vm.hot_add_dimm("dimm1", 36, 2)
            await vm.monitor.dimm_added("dimm0")
            await vm.monitor.dimm_added("dimm1")
            await wait_until(lambda: len(events(seen)) == 6, what="dimm1's adds")
            await anyio.sleep(0.05)
        assert events(seen) == [(Action.ADD, p, State.OFFLINE) for p in range(32, 38)]
        assert vm.monitor.commands == ["query-memory-devices"] * 2


@pytest.mark.asyncio
@pytest.mark.parametrize("case", ["failed_ost", "unknown_device", "qmp_error"])
async def test_what_the_dimm_path_cannot_use_falls_back_to_the_listing(tmp_path: Path, case: str) -> None:
    async with fake_vms(tmp_path) as [vm]:
        b = backend([vm])
        async with started(b) as seen:
            before = listings(vm)
            vm.agent.add(range(32, 36))  # the guest's blocks; what QEMU says of the DIMM follows
            if case != "unknown_device":
                vm.monitor.plug_dimm("dimm0", 32, 4, BLOCK)
            if case == "qmp_error":
                vm.monitor.failing.add("query-memory-devices")
            await vm.monitor.dimm_added(status=1 if case == "failed_ost" else 0)
            await wait_until(lambda: len(events(seen)) == 4, what="adds from the listing")
            assert listings(vm) > before
        assert events(seen) == [(Action.ADD, p, State.OFFLINE) for p in range(32, 36)]
        assert vm.monitor.commands == ([] if case == "failed_ost" else ["query-memory-devices"])


@pytest.mark.asyncio
async def test_a_guest_not_listed_yet_falls_back_without_a_query(tmp_path: Path) -> None:
    async with fake_vms(tmp_path) as [vm]:
        b = backend([vm], timeout=0.2, reconnect_interval=NEVER / 10, reconnect_max=NEVER)
        vm.agent.pause()  # the coldplug scan gets no answer: no block size, no snapshot
        async with started(b) as seen:
            vm.hot_add_dimm("dimm0", 32, 2)
            vm.agent.resume()
            b.guests["vm0"].down_until = 0.0  # its down time is over
            await vm.monitor.dimm_added()
            await wait_until(lambda: len(events(seen)) == 2, what="adds from the listing")
        assert vm.monitor.commands == []


@pytest.mark.asyncio
async def test_a_slow_query_does_not_hold_up_other_events(tmp_path: Path) -> None:
    async with fake_vms(tmp_path) as [vm]:
        b = backend([vm])
        async with started(b) as seen:
            vm.hot_add_dimm("dimm0", 32, 2)
            vm.monitor.hold_commands()
            await vm.monitor.dimm_added()
            await wait_until(lambda: vm.monitor.commands == ["query-memory-devices"], what="the query sent")
            await vm.monitor.emit("VSERPORT_CHANGE", {"id": "qgaport", "open": False})
            await wait_until(lambda: not b.guests["vm0"].available, what="the port event handled meanwhile")
            assert events(seen) == []
            vm.monitor.release_commands()
            b.guests["vm0"].port_changed(True)  # the agent is back: the DIMM's blocks come from its listing
            await wait_until(lambda: len(events(seen)) >= 2, what="the adds")
        assert {(a, p) for a, p, _ in events(seen)} == {(Action.ADD, 32), (Action.ADD, 33)}


# -- the real daemon ---------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_the_daemon_onlines_a_dimm_with_no_listing_before_its_first_batch(
        tmp_path: Path, make_daemon: Any, hook_recorder: Any) -> None:
    async with fake_vms(tmp_path) as [vm]:
        vm.agent.add(range(0, 8), online=True)
        config = {"plugins": {"qga": {"guest": [vm.table()], "poll_interval": NEVER, "resize_quiet": LATE}}}
        daemon = make_daemon("qga", config, entry_points=True)
        async with running(daemon):
            await vm.monitor.negotiated.wait()
            mark = len(vm.agent.requests)
            vm.hot_add_dimm("dimm0", 32, 8)
            await vm.monitor.dimm_added()
            await wait_until(lambda: vm.agent.online_indices() >= set(range(32, 40)), what="the DIMM online")
            daemon.scheduler.stop()
        after = [r["execute"] for r in vm.agent.requests[mark:] if r["execute"] != "guest-sync-delimited"]
        assert after[0] == "guest-set-memory-blocks" and LISTING not in after
        assert sorted(sum(vm.agent.set_calls(), [])) == list(range(32, 40))
        assert [p.blocks for p in hook_recorder.phases] == [8]  # sent together: one phase, one batch
        assert {r.block.index: r.result.outcome.value for r in hook_recorder.reports} == dict.fromkeys(
            range(32, 40), "onlined")
