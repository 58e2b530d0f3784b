"""The plan: the kernel onlines wherever its knobs can carry the policy, hotplugd wherever they cannot."""

from __future__ import annotations

import pytest

from hotplugd.config import from_mapping
from hotplugd.engine.plan import kernel_percent, make_plan, refuse_forced_kernel
from hotplugd.engine.zones import policy_request, promised_zone
from hotplugd.model import Block, Executor, KernelKnobs, NodeLedger, ZoneRequest

MAINLINE = {"auto_online_blocks": "offline", "online_policy": "contig-zones", "auto_movable_ratio": "301",
            "auto_movable_numa_aware": "Y"}
ANOLIS = {**MAINLINE, "parallel_hotplug_ratio": "0"}


def plan(config: dict | None = None, knobs: dict | None = MAINLINE, read_only: frozenset = frozenset(), **kw):
    found = None if knobs is None else KernelKnobs(dict(knobs), read_only)
    return make_plan(from_mapping(config or {}), found, **kw)


@pytest.mark.parametrize(("zones", "wanted"), [
    ({"policy": "auto"}, {"auto_online_blocks": "online", "online_policy": "contig-zones"}),
    ({"policy": "kernel"}, {"auto_online_blocks": "online_kernel"}),
    ({"policy": "movable"}, {"auto_online_blocks": "online_movable"}),
    ({"policy": "auto-movable", "auto_movable_ratio": 150},
     {"auto_online_blocks": "online", "online_policy": "auto-movable", "auto_movable_ratio": "150"}),
])
def test_each_zone_policy_maps_onto_the_kernels_knobs(zones, wanted):
    p = plan({"zones": zones})
    assert p.executor is Executor.KERNEL and p.knobs == wanted
    assert list(p.changes())[-1] == "auto_online_blocks"  # the policy is in place before onlining starts


@pytest.mark.parametrize(("config", "kw", "reason"), [
    ({"scheduler": {"onliner": "hotplugd"}}, {}, 'scheduler.onliner = "hotplugd"'),
    ({"zones": {"policy": "auto", "nodes": {"1": {"policy": "movable"}}}}, {}, "zone policies differ per node"),
    ({}, {"zone_choosers": ["ledger"]}, "plugin ledger chooses zones"),
    ({"scheduler": {"defer": "always"}}, {}, 'scheduler.defer = "always"'),
    ({}, {"concurrency": 4}, "the backend onlines 4 blocks at once"),
    ({}, {"sources": ["dax0.0"]}, "dax devices (dax0.0) want 'movable', other memory 'auto'"),
])
def test_hotplugd_onlines_where_the_kernel_cannot_carry_the_policy(config, kw, reason):
    p = plan(config, **kw)
    assert p.executor is Executor.HOTPLUGD and reason in p.reason
    assert p.knobs == {"auto_online_blocks": "offline"}  # the kernel's own onlining kept off


def test_same_policy_everywhere_including_dax_is_the_kernels():
    assert plan({"zones": {"policy": "movable"}}, sources=["dax0.0"]).executor is Executor.KERNEL
    assert plan({"zones": {"policy": "auto", "nodes": {"1": {"policy": "auto"}}}}).executor is Executor.KERNEL


def test_a_kernel_that_cannot_be_told_is_left_to_hotplugd():
    assert "cannot direct" in plan(knobs=None).reason
    assert "no auto_online_blocks" in plan(knobs={"online_policy": "contig-zones"}).reason
    assert "lacks auto_movable_ratio, online_policy" in plan({"zones": {"policy": "auto-movable"}},
                                         knobs={"auto_online_blocks": "offline"}).reason
    read_only = plan(read_only=frozenset({"auto_online_blocks"}))
    assert read_only.executor is Executor.HOTPLUGD and "cannot be written" in read_only.reason
    assert read_only.conflicts() == []  # it reads offline: nothing contradicts hotplugd onlining


def test_a_read_only_knob_that_contradicts_the_plan_is_the_one_conflict():
    stuck_on = plan({"scheduler": {"onliner": "hotplugd"}}, knobs={**MAINLINE, "auto_online_blocks": "online"},
                    read_only=frozenset({"auto_online_blocks"}))
    assert stuck_on.conflicts() == ["the kernel's auto_online_blocks reads 'online' and cannot be written; "
                                    "the plan needs 'offline'"]
    assert plan().conflicts() == []  # writable: hotplugd sets it, no conflict


def test_knobs_already_right_are_not_written():
    p = plan(knobs={**MAINLINE, "auto_online_blocks": "online"})
    assert p.executor is Executor.KERNEL and p.changes() == {}


def test_the_seed_kernel_gets_its_ratio_in_percent_and_its_parallel_phase_is_the_kernels():
    assert [kernel_percent(r) for r in (0, 0.25, 1.0, 4.0)] == [0, 25, 100, 100]
    p = plan({"scheduler": {"parallel_hotplug_ratio": 0.5}}, knobs=ANOLIS, concurrency=4)
    assert p.executor is Executor.KERNEL and p.knobs["parallel_hotplug_ratio"] == "50"
    off = plan({"scheduler": {"onliner": "hotplugd"}}, knobs=ANOLIS)
    assert off.knobs == {"auto_online_blocks": "offline", "parallel_hotplug_ratio": "0"}


def test_forcing_the_kernel_is_refused_only_where_it_cannot_carry_the_policy():
    forced = {"scheduler": {"onliner": "kernel"}}
    assert refuse_forced_kernel(from_mapping(forced), plan(forced)) is None
    per_node = {**forced, "zones": {"nodes": {"1": {"policy": "movable"}}}}
    assert "differ per node" in refuse_forced_kernel(from_mapping(per_node), plan(per_node))


def test_dax_memory_follows_its_own_policy_whatever_its_node():
    zones = from_mapping({"zones": {"policy": "auto", "nodes": {"1": {"policy": "kernel"}}}}).zones
    dax = Block(40, 128 << 20, node=1, source="dax0.0")
    dimm = Block(41, 128 << 20, node=1)
    assert policy_request(dax, NodeLedger(), zones) is ZoneRequest.MOVABLE
    assert policy_request(dimm, NodeLedger(), zones) is ZoneRequest.KERNEL
    assert promised_zone(dax, zones) is ZoneRequest.MOVABLE and promised_zone(dimm, zones) is ZoneRequest.KERNEL
