"""Converting named dax devices to system RAM, and leaving the rest (and the unconvertible) as they were."""

from __future__ import annotations

import errno
import re

import pytest

from hotplugd_sysfs.dax import DaxHost
from hotplugd_sysfs.daxrules import parse_rules
from hotplugd_sysfs.sysfs import Sysfs
from hotplugd_sysfs.testing.fakedax import FakeDax

GiB = 1 << 30


@pytest.fixture
def dax(fake_sysfs):
    return FakeDax(fake_sysfs)


def host(fake_sysfs, *rules):
    return DaxHost(Sysfs(fake_sysfs.sys, fake_sysfs.proc, fake_sysfs.io), fake_sysfs.proc, parse_rules(list(rules)))


def test_a_named_device_is_converted_as_daxctl_does(fake_sysfs, dax):
    dax.add_device("dax0.0", node=1)
    dax.events.clear()
    [result] = host(fake_sysfs, {"match": {"node": 1}}).reconcile()
    assert result.ok and result.device == "dax0.0"
    assert dax.ops == [("device_dax", "remove_id", "dax0.0"), ("device_dax", "unbind", "dax0.0"),
                       ("kmem", "new_id", "dax0.0"), ("kmem", "bind", "dax0.0")]
    assert dax.driver("dax0.0") == "kmem"
    blocks = dax.blocks("dax0.0")
    assert len(blocks) == 15
    assert {fake_sysfs.node_of(i) for i in blocks} == {1}
    assert {fake_sysfs.state(i) for i in blocks} == {"offline"}  # onlining is the engine's
    heads = [e.split(b"\0")[0].decode() for e in dax.events]
    assert heads[0].startswith("unbind@") and heads[-1].startswith("bind@")
    assert heads[1:-1] == [f"add@/devices/system/memory/memory{i}" for i in blocks]


def test_a_device_no_rule_names_is_never_touched(fake_sysfs, dax):
    dax.add_device("dax0.0", node=1)
    dax.add_device("dax1.0", node=2, start=40 * GiB, size=GiB)
    done = host(fake_sysfs, {"device": "dax1.0"}).reconcile()
    assert [r.device for r in done] == ["dax1.0"]
    assert dax.driver("dax0.0") == "device_dax"
    assert [op for op in dax.ops if op[2] == "dax0.0"] == []
    assert host(fake_sysfs).reconcile() == []  # no rule: nothing converted, whatever is present


def test_a_device_already_in_system_ram_mode_is_left_alone(fake_sysfs, dax):
    dax.add_device("dax0.0", driver="kmem")
    h = host(fake_sysfs, {"device": "dax0.0"})
    assert h.reconcile() == []
    assert dax.ops == []
    assert h.source_of(dax.blocks("dax0.0")[0]) == "dax0.0"


def test_memmap_on_memory_is_set_before_the_bind_where_the_kernel_has_it(fake_sysfs):
    dax = FakeDax(fake_sysfs, memmap_on_memory=True)
    dax.add_device("dax0.0")
    [result] = host(fake_sysfs, {"device": "dax0.0", "memmap_on_memory": True}).reconcile()
    assert result.ok
    assert (dax.device_dir("dax0.0") / "memmap_on_memory").read_text().strip() == "1"


def test_memmap_on_memory_is_skipped_on_a_kernel_without_it(fake_sysfs, dax):
    dax.add_device("dax0.0")
    [result] = host(fake_sysfs, {"device": "dax0.0", "memmap_on_memory": True}).reconcile()
    assert result.ok
    assert not (dax.device_dir("dax0.0") / "memmap_on_memory").exists()


def test_kmem_refusing_the_device_leaves_it_in_devdax_mode_and_says_why(fake_sysfs, dax):
    dax.add_device("dax0.0")
    dax.refuse_kmem("dax0.0", errno.EBUSY, errno.EBUSY)  # new_id's probe, then bind's
    h = host(fake_sysfs, {"device": "dax0.0"})
    [result] = h.reconcile()
    assert not result.ok and result.errno == errno.EBUSY
    assert re.search(r"kmem refused it: EBUSY .*; left in devdax mode", result.detail)
    assert dax.driver("dax0.0") == "device_dax"
    assert "dax0.0" not in dax.ids["kmem"]  # kmem forgot it again: a later bind of device_dax is not stolen
    assert fake_sysfs.indices() == []
    [message] = h.conflicts()
    assert "dax0.0" in message and "EBUSY" in message and "left in devdax mode" in message
    # the next attempt (a later rescan) succeeds: the failure is forgotten
    [again] = h.reconcile()
    assert again.ok and h.conflicts() == []


def test_a_mapped_device_is_not_converted(fake_sysfs, dax):
    dax.add_device("dax0.0")
    dax.map_device("dax0.0", pid=4242)
    h = host(fake_sysfs, {"device": "dax0.0"})
    [result] = h.reconcile()
    assert not result.ok and "mapped or open by pid 4242" in result.detail
    assert dax.ops == [] and dax.driver("dax0.0") == "device_dax"
    assert "mapped or open by pid 4242" in h.conflicts()[0]


def test_without_the_kmem_driver_nothing_is_unbound(fake_sysfs):
    dax = FakeDax(fake_sysfs, kmem=False)
    dax.add_device("dax0.0")
    h = host(fake_sysfs, {"device": "dax0.0"})
    assert "modprobe kmem" in h.conflicts()[0]  # check says so before anything is tried
    [result] = h.reconcile()
    assert not result.ok and dax.ops == []
    dax.load_kmem()
    assert h.reconcile()[0].ok


def test_an_unbound_named_device_is_bound_to_kmem(fake_sysfs, dax):
    dax.add_device("dax0.0", driver="")
    [result] = host(fake_sysfs, {"device": "dax0.0"}).reconcile()
    assert result.ok
    assert [op[:2] for op in dax.ops] == [("kmem", "new_id"), ("kmem", "bind")]


def test_sources_and_rows(fake_sysfs, dax):
    dax.set_tiers({4: "0", 22: "1-2"})
    dax.add_device("dax0.0", node=1)
    dax.add_device("dax1.0", node=2, start=40 * GiB, size=GiB)
    dax.add_device("dax2.0", node=3, start=48 * GiB, size=GiB, driver="kmem")  # converted by someone else
    h = host(fake_sysfs, {"device": "dax0.0"})
    assert h.sources() == ["dax0.0", "dax2.0"]
    h.reconcile()
    assert [(r.device, r.mode, r.node, r.size, r.tier, r.named) for r in h.rows()] == [
        ("dax0.0", "system-ram", 1, 2014 << 20, 22, True),
        ("dax1.0", "devdax", 2, GiB, 22, False),
        ("dax2.0", "system-ram", 3, GiB, None, False)]


def test_an_unreadable_dax_bus_is_logged_and_skipped_not_raised(fake_sysfs, dax):
    dax.add_device("dax0.0")
    (dax.device_dir("dax0.0") / "size").unlink()
    (dax.device_dir("dax0.0") / "size").mkdir()  # reading it fails with EISDIR, not "gone"
    h = host(fake_sysfs, {"device": "dax0.0"})
    assert h.reconcile() == []
    assert dax.ops == [] and dax.driver("dax0.0") == "device_dax"
    dax.add_device("dax1.0", start=40 * GiB, size=GiB, driver="kmem")
    h.refresh()  # dax0.0 still unreadable, but only kmem devices are read: dax1.0 is found
    assert h.source_of(40 * GiB // (128 << 20)) == "dax1.0"
    (dax.device_dir("dax1.0") / "driver").unlink()
    (dax.device_dir("dax1.0") / "driver").mkdir()  # readlink fails with EINVAL: kept as known
    h.refresh()
    assert h.source_of(40 * GiB // (128 << 20)) == "dax1.0"
