"""The 2026 kernels' ``daxX.Y/state`` (whole-device hotplug) beside 6.1's per-block path, and the blocks
hotplugd leaves alone while a dax device goes away (fake tree)."""

from __future__ import annotations

import errno
import functools

import anyio
import pytest
from prometheus_client import CollectorRegistry
from test_daemon_e2e import make

from hotplugd import Action, ZoneRequest
from hotplugd.testing import wait_until
from hotplugd_sysfs import SysfsBackend
from hotplugd_sysfs.dax import DaxHost
from hotplugd_sysfs.daxrules import parse_rules
from hotplugd_sysfs.sysfs import Sysfs
from hotplugd_sysfs.testing.fakedax import FakeDax

pytestmark = pytest.mark.asyncio
NAMED = {"dax": [{"device": "dax0.0"}]}


@pytest.fixture(params=[True, False], ids=["2026", "6.1"])
def kernel(request, fake_sysfs):
    """A dax bus with (2026) or without (6.1) the state attribute, and a devdax dax0.0 on node 1."""
    fake_sysfs.add_node(1)
    dax = FakeDax(fake_sysfs, state=request.param)
    dax.add_device("dax0.0", node=1)
    return dax


def host(fake_sysfs, zone=ZoneRequest.MOVABLE):
    h = DaxHost(Sysfs(fake_sysfs.sys, fake_sysfs.proc, fake_sysfs.io), fake_sysfs.proc,
                parse_rules([{"device": "dax0.0"}]))
    h.zone = zone
    return h


async def test_a_named_device_is_onlined_whole_where_the_kernel_has_state_and_block_by_block_before(
        fake_sysfs, kernel):
    dax = kernel
    [result] = host(fake_sysfs).reconcile()
    blocks = dax.blocks("dax0.0")
    assert result.ok and dax.driver("dax0.0") == "kmem"
    if dax.has_state:  # unplugged first (the probe left it offline: onlining starts there), then one write
        assert dax.state_writes == [("dax0.0", "unplugged"), ("dax0.0", "online_movable")]
        assert dax.state("dax0.0") == "online_movable"
        assert {fake_sysfs.state(i) for i in blocks} == {"online"}
        assert {fake_sysfs.valid_zones(i) for i in blocks} == {("Movable",)}
    else:  # today's path: kmem's blocks offline, the engine onlines them one by one
        assert dax.state_writes == [] and dax.state("dax0.0") is None
        assert {fake_sysfs.state(i) for i in blocks} == {"offline"}
    assert fake_sysfs.writes == []  # never a memoryN/state write here


async def test_zones_dax_picks_the_state_written_and_auto_movable_keeps_the_block_path(fake_sysfs):
    fake_sysfs.add_node(1)
    dax = FakeDax(fake_sysfs, state=True)
    dax.add_device("dax0.0", node=1)
    host(fake_sysfs, ZoneRequest.KERNEL).reconcile()
    assert dax.state_writes[-1] == ("dax0.0", "online_kernel")
    assert {fake_sysfs.valid_zones(i) for i in dax.blocks("dax0.0")} == {("Normal",)}
    dax.add_device("dax1.0", node=1, start=40 << 30, size=1 << 30)
    h = host(fake_sysfs, None)  # auto-movable: decided per block, by the engine
    h.rules = parse_rules([{"device": "dax1.0"}])
    h.reconcile()
    assert dax.state("dax1.0") == "offline" and not any(d == "dax1.0" for d, _ in dax.state_writes)


async def test_a_device_the_kernel_onlined_at_probe_is_left_as_it_is(fake_sysfs):
    fake_sysfs.add_node(1)
    fake_sysfs.set_auto_online("online_movable")  # the kernel carries the plan
    dax = FakeDax(fake_sysfs, state=True)
    dax.add_device("dax0.0", node=1)
    h = host(fake_sysfs)
    assert h.reconcile()[0].ok
    assert dax.state("dax0.0") == "online_movable" and dax.state_writes == []
    assert h.quiet.held == {}  # no hold left open: the blocks' events reach the engine, which verifies them


async def test_a_conversion_that_raises_leaves_no_hold_open(fake_sysfs, monkeypatch):
    fake_sysfs.add_node(1)
    dax = FakeDax(fake_sysfs, state=True)
    dax.add_device("dax0.0", node=1)
    h = host(fake_sysfs)

    def broken(*args, **kwargs):
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr("hotplugd_sysfs.dax.convert", broken)
    assert h.reconcile() == []  # logged (dax_bus_unreadable), never raised into the scan
    assert h.quiet.held == {}


async def test_a_refused_state_write_is_reported_and_retried(fake_sysfs):
    fake_sysfs.add_node(1)
    dax = FakeDax(fake_sysfs, state=True)
    dax.add_device("dax0.0", node=1)
    dax.refuse_state("dax0.0", errno.ENOMEM)  # the unplug is refused
    h = host(fake_sysfs)
    h.reconcile()
    assert dax.state("dax0.0") == "offline" and dax.driver("dax0.0") == "kmem"
    [message] = h.conflicts()
    assert message.startswith("dax device dax0.0 (node 1) could not be onlined whole: writing state of dax0.0 "
                              "(offline -> online_movable) failed: ENOMEM")
    h.reconcile()  # the next scan tries again
    assert dax.state("dax0.0") == "online_movable" and h.conflicts() == []


async def test_the_probes_and_the_unplugs_uevents_are_dropped_the_online_writes_pass(fake_sysfs):
    """The engine must not queue kmem's offline blocks (they are about to be unplugged): the uevents up to
    the kernel's seqnum before the zone write are dropped; the zone write's add events come with the
    blocks online (the engine reads them back)."""
    fake_sysfs.add_node(1)
    dax = FakeDax(fake_sysfs, state=True)
    backend = SysfsBackend.from_options(fake_sysfs.options(dax=NAMED["dax"]), io=fake_sysfs.io)
    backend.set_device_zone(ZoneRequest.MOVABLE)
    await backend.start()
    for data in dax.add_device("dax0.0", node=1):
        backend.feed(data)
    dax.listeners.append(lambda data: anyio.from_thread.run_sync(backend.feed, data))
    blocks = dax.blocks("dax0.0")
    seen = []
    with anyio.fail_after(5):
        async for event in backend.events():
            seen.append((event.action, event.index, event.block.state.value if event.block else None))
            if len(seen) == 2 * len(blocks):
                break
    assert seen == [(Action.ADD, i, "online") for i in blocks] + [(Action.ONLINE, i, None) for i in blocks]
    heads = [e.split(b"\0")[0].split(b"@")[0] for e in dax.events]  # what the kernel sent meanwhile
    assert heads.count(b"add") == 2 * len(blocks) + 1 and heads.count(b"remove") == len(blocks)
    await backend.stop()


async def test_the_daemon_verifies_blocks_onlined_whole_and_counts_them_as_not_its_own(fake_sysfs, hook_recorder):
    fake_sysfs.add_node(1)
    fake_sysfs.add_blocks(range(0, 8), state="online", zones=("Normal",))
    dax = FakeDax(fake_sysfs, state=True)
    daemon, provider = make(fake_sysfs, hook_recorder, sysfs=NAMED)
    async with anyio.create_task_group() as tg:
        with anyio.fail_after(10):
            await tg.start(functools.partial(daemon.run, until_idle=True))
            backend = provider.backend
            for data in dax.add_device("dax0.0", node=1):
                backend.feed(data)
            dax.listeners.append(lambda data: anyio.from_thread.run_sync(backend.feed, data))
            registry: CollectorRegistry = daemon.metrics.registry

            def kernel_onlined() -> float:
                return sum(s.value for m in registry.collect() if m.name == "hotplugd_kernel_onlined_blocks"
                           for s in m.samples if s.name.endswith("_total"))

            await wait_until(lambda: kernel_onlined() == 15, what="the 15 blocks read back")
            backend.end()
    assert dax.state("dax0.0") == "online_movable"
    assert fake_sysfs.writes == []  # hotplugd wrote no memoryN/state
    # each block read back and reported once, none written (attempts 0): the kernel's, by the state write
    assert sorted((r.block.index, r.attempts, r.block.zone) for r in hook_recorder.reports) == [
        (i, 0, "Movable") for i in dax.blocks("dax0.0")]
    assert {fake_sysfs.valid_zones(i) for i in dax.blocks("dax0.0")} == {("Movable",)}


async def test_a_dax_block_going_offline_is_never_onlined_again(fake_sysfs, kernel):
    """daxctl reconfigure-device --mode=devdax, a state write of unplugged by someone else, an operator:
    blocks of a kmem device that go offline stay so, through replays and rescans, until added afresh."""
    dax = kernel
    dax.add_device("dax1.0", node=1, start=40 << 30, size=1 << 30, driver="kmem")  # someone else's, per block
    blocks = dax.blocks("dax1.0")
    for index in blocks:
        fake_sysfs.set_state(index, "online", ("Movable",))
    backend = SysfsBackend.from_options(fake_sysfs.options(), io=fake_sysfs.io)
    await backend.start()
    assert [b.index for b in (await backend.scan()).blocks if b.index in blocks] == blocks  # online, seen
    going = blocks[0]
    fake_sysfs.set_state(going, "offline")
    backend.feed(fake_sysfs.uevent("offline", going))
    backend.feed(fake_sysfs.uevent("add", going, synthetic=True))  # a replay (udevadm trigger)
    backend.feed(fake_sysfs.uevent("online", blocks[1]))
    seen = []
    with anyio.fail_after(5):
        async for event in backend.events():
            seen.append((event.action, event.index))
            if event.index == blocks[1]:
                break
    assert seen == [(Action.OFFLINE, going), (Action.ONLINE, blocks[1])]  # the replayed add is not news
    assert going not in [b.index for b in (await backend.scan()).blocks]  # a rescan does not queue it
    backend.feed(fake_sysfs.uevent("remove", going))
    fake_sysfs.remove_block(going)
    fake_sysfs.add_block(going, node=1)
    backend.feed(fake_sysfs.uevent("add", going))  # added afresh: onlined again like any new block
    with anyio.fail_after(5):
        async for event in backend.events():
            if event.action is Action.ADD:
                assert event.index == going and event.block.source == "dax1.0"
                break
    assert going in [b.index for b in (await backend.scan()).blocks]
    await backend.stop()
