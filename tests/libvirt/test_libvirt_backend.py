"""The libvirt backend's logic against a fake libvirt, in the real daemon: events, selection, reconnect, isolation."""

from __future__ import annotations

import math
import threading
from typing import Any

import anyio
import pytest
from fake_libvirt import FakeGuest, FakeLibvirt

from hotplugd import Rescan
from hotplugd.testing import wait_until
from hotplugd.testing.runner import running
from hotplugd_libvirt import parse
from hotplugd_libvirt.backend import LibvirtBackend
from hotplugd_libvirt.hypervisor import Lifecycle, MemoryChanged

NEVER = 3600
FAST = {"poll_interval": NEVER, "discover_interval": NEVER, "resize_poll_interval": 0.01, "resize_quiet": 0.2,
        "reconnect_interval": 0.05, "reconnect_max": 0.2}


def backend(libvirt: FakeLibvirt, **options: Any) -> LibvirtBackend:
    return LibvirtBackend(parse({"domains": ["vm*"], **FAST, **options}), libvirt)


def daemon_of(make_daemon: Any, b: LibvirtBackend, **overrides: Any) -> Any:
    return make_daemon(b, {"scheduler": {"settle": 0.05, **overrides}})


def onlined_by_domain(daemon: Any) -> dict[str, float]:
    counts: dict[str, float] = {}
    for family in daemon.metrics.registry.collect():
        for s in family.samples:
            if s.name == "hotplugd_blocks_onlined_total":
                counts[s.labels["domain"]] = counts.get(s.labels["domain"], 0) + s.value
    return counts


@pytest.mark.asyncio
async def test_coldplug_and_a_hot_added_dimm_are_onlined_and_counted_per_domain(make_daemon: Any) -> None:
    vm1 = FakeGuest("vm1")
    vm1.add(range(0, 8), online=True)
    vm1.add(range(32, 36))  # offline at start: coldplug
    vm2 = FakeGuest("vm2")
    libvirt = FakeLibvirt(vm1, vm2)
    daemon = daemon_of(make_daemon, backend(libvirt))
    async with running(daemon, until_idle=False):
        await wait_until(lambda: vm1.online_indices() >= set(range(32, 36)), what="coldplug")
        libvirt.hot_add("vm2", range(40, 48))  # DEVICE_ADDED: the guest is listed, fast, until quiet
        await wait_until(lambda: vm2.online_indices() == set(range(40, 48)), what="the DIMM online")
        await wait_until(lambda: onlined_by_domain(daemon) == {"vm1": 4, "vm2": 8}, what="the counts")
    assert sorted(daemon.scheduler.domains) == ["vm1", "vm2"]
    assert vm2.set_calls() == [list(range(40, 48))]  # one batch, each block once


@pytest.mark.asyncio
async def test_a_domain_the_config_does_not_select_is_never_touched(make_daemon: Any) -> None:
    vm1, other = FakeGuest("vm1"), FakeGuest("other")
    vm1.add(range(32, 34))
    other.add(range(32, 34))
    libvirt = FakeLibvirt(vm1, other)
    b = backend(libvirt)
    async with running(daemon_of(make_daemon, b), until_idle=False):
        await wait_until(lambda: vm1.online_indices() == {32, 33}, what="vm1 onlined")
        libvirt.hot_add("other", range(40, 41))
        libvirt.agent("other", True)
        libvirt.start(FakeGuest("other2"))
        await b.reconcile()
        assert list(b.links) == ["vm1"] and b.unselected == ["other", "other2"]
    assert other.requests == [] and other.online_indices() == set()


@pytest.mark.asyncio
async def test_the_agent_connecting_brings_the_guests_blocks(make_daemon: Any) -> None:
    """A guest whose agent is not up yet is left alone (backoff); AGENT_LIFECYCLE connected lists it at once."""
    vm1 = FakeGuest("vm1", agent_connected=False)
    vm1.add(range(32, 36))
    libvirt = FakeLibvirt(vm1)
    b = backend(libvirt, reconnect_interval=600, reconnect_max=600, timeout="1s")
    async with running(daemon_of(make_daemon, b), until_idle=False):
        await wait_until(lambda: not b.links["vm1"].healthy, what="the agent down")
        assert b.links["vm1"].down_reason == "unavailable"
        libvirt.agent("vm1", True)
        await wait_until(lambda: vm1.online_indices() == set(range(32, 36)), what="onlined after the agent came")


@pytest.mark.asyncio
async def test_domains_that_start_and_stop_are_followed(make_daemon: Any) -> None:
    libvirt = FakeLibvirt(FakeGuest("vm1"))
    b = backend(libvirt)
    seen: list[Any] = []
    daemon = daemon_of(make_daemon, b)
    original = daemon.scheduler.handle
    daemon.scheduler.handle = lambda event: (seen.append(event), original(event))[1]
    async with running(daemon, until_idle=False):
        vm2 = FakeGuest("vm2")
        vm2.add(range(16, 20))
        libvirt.start(vm2)
        await wait_until(lambda: vm2.online_indices() == set(range(16, 20)), what="the started domain onlined")
        libvirt.destroy("vm2")
        await wait_until(lambda: "vm2" not in b.links, what="the stopped domain dropped")
        await wait_until(lambda: any(isinstance(e, Rescan) for e in seen), what="its domain rescanned away")
        # the same name started again is a new run of the domain: managed afresh
        again = FakeGuest("vm2")
        again.add(range(16, 18))
        libvirt.start(again)
        await wait_until(lambda: again.online_indices() == {16, 17}, what="the restarted domain onlined")


@pytest.mark.asyncio
async def test_libvirtd_restarting_mid_phase_loses_nothing_and_onlines_nothing_twice(
        make_daemon: Any, hook_recorder: Any) -> None:
    """The batch in flight when libvirtd goes away did its work in the guest, but its reply is lost: it is sent
    again on the next connection once libvirt has the agent back (the agent answers success for online blocks),
    so no block is given up, nor counted as another onliner's."""
    vm1 = FakeGuest("vm1")
    libvirt = FakeLibvirt(vm1)
    b = backend(libvirt, timeout="10s")
    async with running(daemon_of(make_daemon, b), until_idle=False):
        vm1.hold_sets()
        libvirt.hot_add("vm1", range(32, 40))
        await wait_until(lambda: libvirt.sets_in_flight == 1, what="a batch in flight")
        libvirt.stop_daemon()  # the connection closes with the batch in flight
        await wait_until(lambda: b.conn is None, what="the connection seen lost")
        vm1.add(range(40, 44))  # memory added while libvirtd is away: no event will say so
        vm1.release_sets()
        await anyio.sleep(0.3)  # reconnect attempts fail meanwhile, with backoff
        assert b.failures >= 1
        vm1.agent_connected = False  # a new libvirtd takes the agent's channel back a little later
        libvirt.start_daemon()
        await wait_until(lambda: b.conn is not None, what="reconnected")
        await anyio.sleep(0.2)
        libvirt.agent("vm1", True)
        await wait_until(lambda: vm1.online_indices() == set(range(32, 44)), what="everything online after")
        assert b.conn is not None and libvirt.opened >= 2
    outcomes = {r.block.index: r.result.outcome.value for r in hook_recorder.reports}
    assert outcomes == {i: "onlined" for i in range(32, 44)}  # each once, none failed
    calls = [i for batch in vm1.set_calls() for i in batch]
    assert sorted(calls) == sorted([*range(32, 44), *range(32, 40)])  # the lost batch sent once more


@pytest.mark.asyncio
async def test_a_hung_agent_never_holds_up_another_domain(make_daemon: Any) -> None:
    slow, fast = FakeGuest("vm-slow"), FakeGuest("vm-fast")
    libvirt = FakeLibvirt(slow, fast)
    b = backend(libvirt, timeout="30s")
    async with running(daemon_of(make_daemon, b), until_idle=False):
        await wait_until(lambda: all(link.snapshot is not None for link in b.links.values()), what="listed")
        slow.hang = threading.Event()  # from now on its agent answers nothing
        libvirt.hot_add("vm-slow", range(32, 40))
        await wait_until(lambda: len(slow.requests) > 2, what="the hung agent asked")
        libvirt.hot_add("vm-fast", range(32, 40))
        await wait_until(lambda: fast.online_indices() == set(range(32, 40)), what="the other domain onlined")
        assert slow.online_indices() == set() and not slow.hang.is_set()  # still hanging all along
        slow.hang.set()  # answers again: its blocks come online too
        await wait_until(lambda: slow.online_indices() == set(range(32, 40)), what="the slow one onlined")


@pytest.mark.asyncio
async def test_domains_online_in_parallel(make_daemon: Any) -> None:
    guests = [FakeGuest(f"vm{i}") for i in range(3)]
    libvirt = FakeLibvirt(*guests)
    b = backend(libvirt)
    async with running(daemon_of(make_daemon, b), until_idle=False):
        await wait_until(lambda: all(link.snapshot is not None for link in b.links.values()), what="listed")
        for g in guests:
            g.hold_sets()
            libvirt.hot_add(g.name, range(32, 36))
        await wait_until(lambda: libvirt.sets_in_flight == 3, what="a batch in flight in every domain")
        for g in guests:
            g.release_sets()
        await wait_until(lambda: all(g.online_indices() == set(range(32, 36)) for g in guests), what="all online")
    assert libvirt.most_sets_in_flight == 3


@pytest.mark.asyncio
async def test_a_lying_agent_is_caught_and_its_blocks_not_counted(make_daemon: Any) -> None:
    vm1 = FakeGuest("vm1", lie=True)
    libvirt = FakeLibvirt(vm1)
    b = backend(libvirt, reconnect_interval=600, reconnect_max=600)
    async with running(daemon_of(make_daemon, b), until_idle=False):
        await wait_until(lambda: b.links["vm1"].snapshot is not None, what="listed")
        libvirt.hot_add("vm1", range(32, 34))
        await wait_until(lambda: b.links["vm1"].down_reason == "false_success", what="the lie caught")


@pytest.mark.asyncio
async def test_an_event_storm_past_the_inbox_reads_everything_again(make_daemon: Any) -> None:
    vm1 = FakeGuest("vm1")
    libvirt = FakeLibvirt(vm1)
    b = backend(libvirt)
    async with running(daemon_of(make_daemon, b), until_idle=False):
        await wait_until(lambda: b.links["vm1"].snapshot is not None, what="listed")
        vm1.add(range(32, 36))  # no event of its own: only the storm's re-read finds it
        for _ in range(3000):
            libvirt.emit(Lifecycle("unknown", 4, 0))
        await wait_until(lambda: vm1.online_indices() == set(range(32, 36)), what="found by the re-read")
        assert b.dropped_counts()["libvirt_inbox_full"] > 0


@pytest.mark.asyncio
async def test_check_lists_domains_and_fails_on_unreachable_libvirt_or_silent_agents() -> None:
    vm1, vm2, other = FakeGuest("vm1"), FakeGuest("vm2", agent_connected=False), FakeGuest("other")
    vm1.add(range(0, 4), online=True)
    vm1.add(range(32, 34))
    libvirt = FakeLibvirt(vm1, vm2, other)
    b = backend(libvirt, timeout="1s")
    assert await b.conflicts() == ["domain vm2: its guest agent does not answer through libvirt (unavailable): "
                                   "is qemu-guest-agent running in the guest?"]
    lines = await b.inventory()
    assert lines[0].endswith("2 running domain(s) selected, 1 not selected")
    assert "domain vm1: agent up, 6 blocks (2 offline); plan: hotplugd onlines through the guest agent" in lines[1]
    assert "domain vm2: agent down (unavailable)" in lines[2]
    assert lines[3].strip() == "domain other: not selected (never touched)"
    assert other.requests == []
    vm1.auto_online = "online"
    assert "domain vm1: its kernel onlines hot-added memory itself" in (await backend(libvirt).conflicts())[0]
    libvirt.up = False
    down = backend(libvirt)
    assert (await down.conflicts())[0].startswith("libvirt qemu:///system: cannot connect:")
    assert "not connected" in (await down.inventory())[0]


@pytest.mark.asyncio
async def test_an_added_memory_device_is_polled_for_until_its_blocks_come(make_daemon: Any) -> None:
    """DEVICE_ADDED comes when QEMU added the device; the guest creates its blocks seconds later on a loaded host:
    the fast poll goes on past ``resize_quiet`` until they come (not until the 5 s fallback poll)."""
    vm1 = FakeGuest("vm1")
    libvirt = FakeLibvirt(vm1)
    b = backend(libvirt, add_wait="30s")
    async with running(daemon_of(make_daemon, b), until_idle=False):
        await wait_until(lambda: b.links["vm1"].snapshot is not None, what="listed")
        libvirt.emit(MemoryChanged("vm1", "virtio-disk1"))  # not memory: nothing to wait for
        assert b.links["vm1"].awaiting_until == -math.inf
        libvirt.emit(MemoryChanged("vm1", "memdimm0"))
        await anyio.sleep(0.6)  # three times resize_quiet
        vm1.add(range(32, 36))
        await wait_until(lambda: vm1.online_indices() == set(range(32, 36)), what="found by the fast poll")
        assert b.links["vm1"].awaiting_until == -math.inf  # they came: back to the quiet rule


@pytest.mark.asyncio
async def test_a_dimms_blocks_come_from_the_domain_xml_without_a_listing(make_daemon: Any) -> None:
    """DEVICE_ADDED of memdimm0: its range from the XML, the last block's state file waited for, the blocks
    announced and onlined in one guest-set-memory-blocks, no guest-get-memory-blocks before it."""
    vm1 = FakeGuest("vm1")
    libvirt = FakeLibvirt(vm1)
    b = backend(libvirt)
    async with running(daemon_of(make_daemon, b), until_idle=False):
        await wait_until(lambda: b.links["vm1"].snapshot is not None, what="listed")
        start = len(vm1.requests)
        libvirt.hot_add("vm1", range(40, 48), create=False)
        await wait_until(lambda: any(r["execute"] == "guest-file-open" for r in vm1.requests[start:]),
                         what="the last block looked for")
        vm1.add(range(40, 48))  # the guest created them
        await wait_until(lambda: vm1.online_indices() == set(range(40, 48)), what="onlined")
    commands = [r["execute"] for r in vm1.requests[start:]]
    first_set = commands.index("guest-set-memory-blocks")
    assert "guest-get-memory-blocks" not in commands[:first_set]
    assert vm1.set_calls()[0] == list(range(40, 48))
    assert [r["arguments"]["path"] for r in vm1.requests[start:] if r["execute"] == "guest-file-open"][0] == \
        "/sys/devices/system/memory/memory47/state"


def test_dimm_range_from_the_domain_xml() -> None:
    from hotplugd_libvirt.dimms import dimm_range

    xml = ("<domain><devices><memory model='dimm'><target><size unit='KiB'>1048576</size></target>"
           "<alias name='dimm0'/><address type='dimm' slot='0' base='0x500000000'/></memory></devices></domain>")
    assert dimm_range(xml, "memdimm0", 128 << 20) == range(160, 168)  # 20 GiB / 128 MiB, 8 blocks
    assert dimm_range(xml, "memdimm1", 128 << 20) is None
    assert dimm_range("<not xml", "memdimm0", 128 << 20) is None


@pytest.mark.asyncio
async def test_a_dimm_not_yet_in_the_xml_is_read_again(make_daemon: Any) -> None:
    """libvirt raises DEVICE_ADDED before the DIMM is in the live XML: the XML is read again until it is."""
    vm1 = FakeGuest("vm1")
    libvirt = FakeLibvirt(vm1)
    b = backend(libvirt)
    async with running(daemon_of(make_daemon, b), until_idle=False):
        await wait_until(lambda: b.links["vm1"].snapshot is not None, what="listed")
        start = len(vm1.requests)
        libvirt.emit(MemoryChanged("vm1", "memdimm0"))  # the event first
        await anyio.sleep(0.1)
        vm1.dimms.append((40 * (128 << 20), 8 * (128 << 20)))  # then the XML, then the guest's blocks
        vm1.add(range(40, 48))
        await wait_until(lambda: vm1.online_indices() == set(range(40, 48)), what="onlined")
    commands = [r["execute"] for r in vm1.requests[start:]]
    assert "guest-get-memory-blocks" not in commands[:commands.index("guest-set-memory-blocks")]
