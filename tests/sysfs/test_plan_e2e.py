"""The plan end to end on the fake sysfs tree's kernel: hotplugd sets the kernel's knobs, the kernel
onlines, hotplugd proves every block; and where the kernel cannot carry the policy, hotplugd onlines.
"""

from __future__ import annotations

import functools
import json

import anyio
import pytest
from structlog.testing import capture_logs
from test_daemon_e2e import make

from hotplugd.errors import ConfigError
from hotplugd.testing import sample
from hotplugd_sysfs.testing.fakesysfs import FakeSysfs

pytestmark = pytest.mark.asyncio


async def run_hot_add(fake: FakeSysfs, daemon, provider, indices, node: int = 0, **kwargs) -> None:
    async with anyio.create_task_group() as tg:
        with anyio.fail_after(10):
            await tg.start(functools.partial(daemon.run, until_idle=True))
            for data in fake.hot_add(indices, node=node, **kwargs):
                provider.backend.feed(data)
            provider.backend.end()


@pytest.mark.parametrize(("policy", "knobs", "zone"), [
    ({"policy": "auto"}, {"auto_online_blocks": "online", "online_policy": "contig-zones"}, "Normal"),
    ({"policy": "kernel"}, {"auto_online_blocks": "online_kernel"}, "Normal"),
    ({"policy": "movable"}, {"auto_online_blocks": "online_movable"}, "Movable"),
    ({"policy": "auto-movable", "auto_movable_ratio": 1000},
     {"auto_online_blocks": "online", "online_policy": "auto-movable", "auto_movable_ratio": "1000"}, "Movable"),
])
async def test_the_kernel_onlines_by_the_policy_and_hotplugd_proves_each_block(fake_sysfs, hook_recorder,
                                                                               policy, knobs, zone):
    fake_sysfs.add_blocks(range(0, 8), state="online", zones=("Normal",))  # boot memory
    daemon, provider = make(fake_sysfs, hook_recorder, zones=policy, scheduler={"onliner": "auto"})
    await run_hot_add(fake_sysfs, daemon, provider, range(16, 24))
    assert {name: fake_sysfs.knob(name) for name in knobs} == knobs
    assert fake_sysfs.writes == []  # not one state write of hotplugd's
    assert all(fake_sysfs.valid_zones(i) == (zone,) for i in range(16, 24))
    assert hook_recorder.outcomes() == {i: "onlined" for i in range(16, 24)}
    assert sample(daemon.metrics, "hotplugd_kernel_onlined_blocks_total",
                  {"domain": "host", "node": "0", "zone": zone}) == 8
    assert sample(daemon.metrics, "hotplugd_onliner", {"domain": "host", "onliner": "kernel"}) == 1
    recorded = json.loads((fake_sysfs.base / "state" / "kernel-knobs.json").read_text())
    assert recorded["host"]["auto_online_blocks"] == "offline"  # as found, for an uninstall to restore


async def test_blocks_the_kernel_left_offline_are_onlined_by_hotplugd(fake_sysfs, hook_recorder):
    daemon, provider = make(fake_sysfs, hook_recorder, scheduler={"onliner": "auto", "kernel_grace": 0.05})
    fake_sysfs.add_blocks(range(4, 6))  # boot memory left offline: coldplug, after the grace
    await run_hot_add(fake_sysfs, daemon, provider, range(8, 12), left_offline=[9])
    assert fake_sysfs.online_indices() == {4, 5, 8, 9, 10, 11}
    assert sorted(index for index, _ in fake_sysfs.writes) == [4, 5, 9]
    assert [r.attempts > 0 for r in sorted(hook_recorder.reports, key=lambda r: r.block.index)] == \
        [True, True, False, True, False, False]  # written by hotplugd, or onlined by the kernel


async def test_per_node_policies_fall_back_to_hotplugd_with_the_kernel_off(fake_sysfs, hook_recorder):
    fake_sysfs.add_node(1, "4-7")
    fake_sysfs.set_auto_online("online")  # found on: the plan turns it off
    zones = {"policy": "kernel", "nodes": {"1": {"policy": "movable"}}}
    daemon, provider = make(fake_sysfs, hook_recorder, zones=zones, scheduler={"onliner": "auto"})
    fake_sysfs.add_blocks(range(8, 10), node=1)
    await run_hot_add(fake_sysfs, daemon, provider, range(16, 18))
    assert fake_sysfs.knob("auto_online_blocks") == "offline"
    assert "zone policies differ per node" in daemon.plan.reason
    assert [fake_sysfs.valid_zones(i) for i in (8, 9, 16, 17)] == [("Movable",)] * 2 + [("Normal",)] * 2
    assert sample(daemon.metrics, "hotplugd_onliner", {"domain": "host", "onliner": "hotplugd"}) == 1


async def test_forcing_the_kernel_where_it_cannot_carry_the_policy_refuses_to_start(fake_sysfs):
    fake_sysfs.set_read_only("auto_online_blocks")
    daemon, _ = make(fake_sysfs, scheduler={"onliner": "kernel"})
    with pytest.raises(ConfigError, match="cannot be honoured: auto_online_blocks cannot be written"):
        await daemon.run(until_idle=True)
    assert fake_sysfs.knob("auto_online_blocks") == "offline"


async def test_the_seed_kernel_gets_its_ratio_and_half_online_blocks_are_watched(fake_sysfs, hook_recorder):
    fake_sysfs.set_param("parallel_hotplug_ratio", "0")
    fake_sysfs.add_blocks(range(0, 2), state="online", zones=("Normal",))  # the zone is populated already
    daemon, provider = make(fake_sysfs, hook_recorder, scheduler={"onliner": "auto", "parallel_hotplug_ratio": 0.5})
    async with anyio.create_task_group() as tg:
        with anyio.fail_after(10):
            await tg.start(functools.partial(daemon.run, until_idle=True))
            for data in fake_sysfs.hot_add(range(16, 20)):
                provider.backend.feed(data)
            await anyio.sleep(0.2)
            assert hook_recorder.reports == []  # half-online: not onlined yet, not an error, not retried
            assert fake_sysfs.finish_deferred() == [16, 17, 18, 19]  # the kernel's final phase: no uevent
            provider.backend.end()
    assert fake_sysfs.knob("parallel_hotplug_ratio") == "50"
    assert fake_sysfs.writes == []
    assert hook_recorder.outcomes() == {i: "onlined" for i in range(16, 20)}
    assert sample(daemon.metrics, "hotplugd_kernel_final_phase_seconds_count") == 4


async def test_a_state_directory_that_cannot_be_written_does_not_stop_onlining(fake_sysfs, hook_recorder, tmp_path):
    blocked = tmp_path / "not-a-directory"
    blocked.write_text("")
    daemon, provider = make(fake_sysfs, hook_recorder, scheduler={"onliner": "auto"},
                            state_directory=str(blocked / "state"))
    with capture_logs() as logs:
        await run_hot_add(fake_sysfs, daemon, provider, range(16, 18))
    assert fake_sysfs.knob("auto_online_blocks") == "online"
    assert hook_recorder.outcomes() == {16: "onlined", 17: "onlined"}
    assert [e["consequence"] for e in logs if e["event"] == "knobs_not_recorded"] == [
        "an uninstall cannot restore the kernel's knobs as found"]
