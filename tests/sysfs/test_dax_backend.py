"""The sysfs backend with dax devices: intake of dax binds, conversion on events and scans, Block.source,
the plan's sources, check's conflicts, status rows and the tier metrics; then the whole daemon (fake tree)."""

from __future__ import annotations

import errno
import functools

import anyio
import pytest
from prometheus_client import CollectorRegistry
from test_daemon_e2e import make

from hotplugd import Action, BlockEvent, Executor
from hotplugd.testing import wait_until
from hotplugd_sysfs import SysfsBackend
from hotplugd_sysfs.intake import DaxUEvent, Intake, MemoryUEvent
from hotplugd_sysfs.netlink import Datagram
from hotplugd_sysfs.testing.fakedax import FakeDax

pytestmark = pytest.mark.asyncio
GiB = 1 << 30
NAMED = {"dax": [{"match": {"node": 1}}]}


@pytest.fixture
def dax(fake_sysfs):
    fake_sysfs.add_node(1)
    return FakeDax(fake_sysfs)


def backend_for(fake_sysfs, **options):
    return SysfsBackend.from_options(fake_sysfs.options(**options), io=fake_sysfs.io)


async def test_the_intake_keeps_dax_binds_only(fake_sysfs, dax):
    add, bind = dax.add_device("dax0.0")
    intake = Intake()
    assert intake.decode(Datagram(bind)) == DaxUEvent("bind", "dax0.0", "device_dax")
    assert intake.decode(Datagram(add)) is None  # device_dax binds it next: that is the moment
    assert intake.decode(Datagram(b"bind@/devices/x/dax0.0\0SUBSYSTEM=dax\0bad\0")) is None
    assert intake.dropped == {"malformed": 1}
    assert intake.decode(Datagram(fake_sysfs.uevent("add", 5))) == MemoryUEvent(Action.ADD, 5, False, 1001 + 2)
    assert intake.skipped == 1


async def test_a_new_devdax_device_is_converted_and_its_blocks_carry_its_name(fake_sysfs, dax):
    backend = backend_for(fake_sysfs, dax=NAMED["dax"])
    fake_sysfs.add_block(0, state="online", zones=("Normal",))
    await backend.start()
    for data in dax.add_device("dax0.0", node=1):
        backend.feed(data)
    # the conversion runs in a worker thread: the kernel's uevents reach the backend from there
    dax.listeners.append(lambda data: anyio.from_thread.run_sync(backend.feed, data))
    events: list[BlockEvent] = []
    with anyio.fail_after(5):
        async for event in backend.events():
            events.append(event)
            if len(events) == 15:
                break
    assert dax.driver("dax0.0") == "kmem"
    assert [(e.action, e.block.index, e.block.node, e.block.source) for e in events] == [
        (Action.ADD, i, 1, "dax0.0") for i in dax.blocks("dax0.0")]
    census = {b.index: b.source for b in backend.census()}
    assert census == {0: "", **{i: "dax0.0" for i in dax.blocks("dax0.0")}}
    await backend.stop()


async def test_a_device_present_at_start_is_converted_by_the_scan(fake_sysfs, dax):
    dax.add_device("dax0.0", node=1)
    dax.add_device("dax1.0", node=2, start=40 * GiB, size=GiB)
    backend = backend_for(fake_sysfs, dax=NAMED["dax"])
    assert await backend.memory_sources() == ["dax0.0"]
    other = backend_for(fake_sysfs, dax=[{"device": "dax7.0"}])  # named, not there yet: it may come any time
    assert await other.memory_sources() == ["device='dax7.0'"]
    scan = await backend.scan()
    assert [(b.index, b.source) for b in scan.blocks] == [(i, "dax0.0") for i in dax.blocks("dax0.0")]
    assert dax.driver("dax1.0") == "device_dax"
    assert await backend.memory_sources("guest1") == []


async def test_check_reports_a_named_device_that_cannot_be_converted(fake_sysfs, dax):
    dax.add_device("dax0.0", node=1)
    dax.map_device("dax0.0", pid=99)
    backend = backend_for(fake_sysfs, dax=NAMED["dax"])
    [message] = await backend.conflicts()
    assert message.startswith("dax device dax0.0 (node 1) is named by plugins.sysfs.dax")
    assert "pid 99" in message
    assert dax.ops == []  # check only reads


async def test_status_rows_and_the_tier_metrics(fake_sysfs, dax):
    dax.set_tiers({4: "0", 22: "1"})
    dax.set_demotion(True)
    dax.add_device("dax0.0", node=1, driver="kmem")
    backend = backend_for(fake_sysfs)
    [row] = backend.device_rows()
    assert (row.device, row.mode, row.node, row.tier, row.named) == ("dax0.0", "system-ram", 1, 22, False)
    registry = CollectorRegistry()
    for collector in backend.collectors():
        registry.register(collector)
    assert registry.get_sample_value("hotplugd_memory_tier", {"node": "0"}) == 4
    assert registry.get_sample_value("hotplugd_memory_tier", {"node": "1"}) == 22
    assert registry.get_sample_value("hotplugd_numa_demotion_enabled") == 1
    assert registry.get_sample_value("hotplugd_dax_device_bytes",
                                     {"device": "dax0.0", "mode": "system-ram", "node": "1"}) == 2014 << 20


async def test_without_tiers_or_demotion_the_metrics_are_absent_not_wrong(fake_sysfs):
    registry = CollectorRegistry()
    for collector in backend_for(fake_sysfs).collectors():
        registry.register(collector)
    assert registry.get_sample_value("hotplugd_numa_demotion_enabled") is None
    assert registry.get_sample_value("hotplugd_memory_tier", {"node": "0"}) is None


# -- the daemon ------------------------------------------------------------------------------


async def test_the_daemon_onlines_dax_memory_movable_and_a_dimm_by_its_own_policy(fake_sysfs, dax, hook_recorder):
    fake_sysfs.add_blocks(range(0, 8), state="online", zones=("Normal",))
    daemon, provider = make(fake_sysfs, hook_recorder, sysfs=NAMED)  # zones: auto; [zones.dax]: movable (default)
    async with anyio.create_task_group() as tg:
        with anyio.fail_after(10):
            await tg.start(functools.partial(daemon.run, until_idle=True))
            backend = provider.backend
            # the conversion runs in a worker thread: the kernel's uevents reach the backend from there
            for data in dax.add_device("dax0.0", node=1):  # the daemon converts it at device_dax's bind
                backend.feed(data)
            dax.listeners.append(lambda data: anyio.from_thread.run_sync(backend.feed, data))
            await wait_until(lambda: len(hook_recorder.reports) == 15, what="the dax blocks onlined")
            for data in fake_sysfs.hot_add(range(16, 20), node=0):  # a DIMM on node 0
                backend.feed(data)
            backend.end()
    converted = dax.blocks("dax0.0")
    assert dax.driver("dax0.0") == "kmem"
    assert fake_sysfs.online_indices() == {*range(0, 8), *converted, *range(16, 20)}
    assert {fake_sysfs.valid_zones(i) for i in converted} == {("Movable",)}
    assert {fake_sysfs.valid_zones(i) for i in range(16, 20)} == {("Normal",)}
    reports = {r.block.index: r for r in hook_recorder.reports}
    assert {reports[i].block.source for i in converted} == {"dax0.0"}
    assert {reports[i].block.source for i in range(16, 20)} == {""}
    assert hook_recorder.outcomes() == {i: "onlined" for i in [*converted, *range(16, 20)]}


@pytest.mark.parametrize("present", [True, False], ids=["present", "to-come"])
async def test_the_plan_has_hotplugd_online_when_dax_memory_wants_another_zone(fake_sysfs, dax, hook_recorder,
                                                                              present):
    if present:
        dax.add_device("dax0.0", node=1)  # present before start: coldplug
    daemon, provider = make(fake_sysfs, hook_recorder, sysfs=NAMED, scheduler={"onliner": "auto"})
    async with anyio.create_task_group() as tg:
        with anyio.fail_after(10):
            await tg.start(functools.partial(daemon.run, until_idle=True))
            provider.backend.end()
    assert daemon.plan.executor is Executor.HOTPLUGD
    assert ("dax0.0" if present else "node=1") in daemon.plan.reason
    assert fake_sysfs.knob("auto_online_blocks") == "offline"  # the kernel would online dax memory by the rest's policy
    if present:
        assert {fake_sysfs.valid_zones(i) for i in dax.blocks("dax0.0")} == {("Movable",)}


async def test_a_conversion_half_done_is_reported_per_block_and_retried(fake_sysfs, dax, hook_recorder):
    dax.add_device("dax0.0", node=1)
    first, second, *rest = dax.blocks("dax0.0")
    fake_sysfs.fail(first, errno.EBUSY)  # transient: retried like any block
    fake_sysfs.fail(second, errno.EINVAL)  # permanent: left offline, reported
    daemon, provider = make(fake_sysfs, hook_recorder, sysfs=NAMED, scheduler={"retry_backoff": 0.0})
    async with anyio.create_task_group() as tg:
        with anyio.fail_after(10):
            await tg.start(functools.partial(daemon.run, until_idle=True))
            provider.backend.end()
    assert dax.driver("dax0.0") == "kmem"  # the conversion stands: nothing is converted back
    assert hook_recorder.outcomes() == {first: "onlined", second: "permanent", **{i: "onlined" for i in rest}}
    assert [r.attempts for r in hook_recorder.reports if r.block.index == first] == [2]
    assert fake_sysfs.state(second) == "offline"
