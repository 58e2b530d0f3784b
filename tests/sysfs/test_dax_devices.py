"""Reading the dax bus, and the ``[[plugins.sysfs.dax]]`` rules that name devices (fake tree)."""

from __future__ import annotations

import re

import pytest

from hotplugd_sysfs import hotplugd_check_config
from hotplugd_sysfs.daxdevices import read_devices
from hotplugd_sysfs.daxrules import DaxRule, parse_rules
from hotplugd_sysfs.daxusers import device_users
from hotplugd_sysfs.sysfs import Sysfs
from hotplugd_sysfs.testing.fakedax import DAX_SIZE, DAX_START, FakeDax

UUID = "6ff6e8a0-1f2e-4d3c-8b7a-0123456789ab"
GiB = 1 << 30


@pytest.fixture
def sysfs(fake_sysfs):
    return Sysfs(fake_sysfs.sys, fake_sysfs.proc, fake_sysfs.io)


def test_a_devdax_device_as_6_1_shows_it(fake_sysfs, sysfs):
    FakeDax(fake_sysfs).add_device("dax0.0", node=1, uuid=UUID)
    [dev] = read_devices(sysfs)
    assert (dev.name, dev.target_node, dev.size) == ("dax0.0", 1, DAX_SIZE)
    assert (dev.driver, dev.mode) == ("device_dax", "devdax")
    assert dev.ranges == ((DAX_START, DAX_START + DAX_SIZE),)
    assert dev.align == 2 << 20
    assert dev.namespace_uuid == UUID
    assert (dev.memmap_on_memory, dev.state) == (None, None)  # 6.1 has neither: read as absent, no error
    assert list(dev.blocks(128 << 20)) == list(range(273, 288))  # kmem aligns inwards: the guest's 15 blocks


def test_a_namespace_without_its_own_dax_uuid_is_named_by_its_label_uuid(fake_sysfs, sysfs):
    FakeDax(fake_sysfs).add_device("dax0.0", raw_uuid=UUID)
    [dev] = read_devices(sysfs)
    assert dev.namespace_uuid == UUID


def test_newer_kernels_attributes_are_read_where_present(fake_sysfs, sysfs):
    dax = FakeDax(fake_sysfs, memmap_on_memory=True, state=True)
    dax.add_device("dax1.0", node=2, driver="")
    dax.add_device("dax2.0", node=2, start=40 * GiB, size=GiB, driver="kmem")
    unbound, kmem = read_devices(sysfs)
    assert (unbound.memmap_on_memory, unbound.state, unbound.mode, unbound.namespace_uuid) == (
        False, None, "unbound", None)
    # state is the kmem driver's attribute: the probe's online type (auto_online_blocks offline here)
    assert (kmem.mode, kmem.state) == ("system-ram", "offline")


def test_no_dax_bus_is_no_device(sysfs):
    assert read_devices(sysfs) == []


def test_a_process_mapping_the_device_is_found(fake_sysfs):
    dax = FakeDax(fake_sysfs)
    dax.add_device("dax0.0")
    assert device_users(fake_sysfs.io, fake_sysfs.proc, "dax0.0").clear
    dax.map_device("dax0.0", pid=77)
    assert device_users(fake_sysfs.io, fake_sysfs.proc, "dax0.0").pids == (77,)
    assert device_users(fake_sysfs.io, fake_sysfs.proc, "dax1.0").clear


# -- rules --------------------------------------------------------------------------------


def devices(fake_sysfs, sysfs):
    dax = FakeDax(fake_sysfs)
    dax.add_device("dax0.0", node=1, uuid=UUID)
    dax.add_device("dax1.0", node=2, start=40 * GiB, size=GiB)
    return {d.name: d for d in read_devices(sysfs)}


@pytest.mark.parametrize(("table", "named"), [
    ({"device": "dax0.0"}, {"dax0.0"}),
    ({"match": {"node": 2}}, {"dax1.0"}),
    ({"match": {"uuid": UUID.upper()}}, {"dax0.0"}),
    ({"match": {"resource": hex(40 * GiB)}}, {"dax1.0"}),
    ({"match": {"resource": f"{hex(32 * GiB)}-{hex(41 * GiB - 1)}"}}, {"dax0.0", "dax1.0"}),
    ({"match": {"resource": f"{hex(32 * GiB)}-{hex(40 * GiB)}"}}, {"dax0.0"}),  # dax1.0 sticks out
    ({"match": {"path": "/sys/bus/dax/devices/dax1.0"}}, {"dax1.0"}),
    ({"match": {"node": 1, "device": "dax1.0"}}, set()),  # every criterion must hold
])
def test_a_rule_names_devices_by_name_node_uuid_resource_or_path(fake_sysfs, sysfs, table, named):
    [rule] = parse_rules([table])
    found = devices(fake_sysfs, sysfs)
    assert {name for name, dev in found.items() if rule.matches(dev, fake_sysfs.sys)} == named


def test_a_device_path_under_sys_devices_names_it_too(fake_sysfs, sysfs):
    found = devices(fake_sysfs, sysfs)
    real = "/sys/" + str(found["dax0.0"].path.resolve().relative_to(fake_sysfs.sys))
    assert parse_rules([{"match": {"path": real}}])[0].matches(found["dax0.0"], fake_sysfs.sys)


def test_rules_parse_memmap_on_memory():
    assert parse_rules([{"device": "dax0.0", "memmap_on_memory": True}]) == (
        DaxRule(device="dax0.0", memmap_on_memory=True),)


@pytest.mark.parametrize(("table", "message"), [
    ({"dax": {"device": "dax0.0"}}, "expected a list of tables"),
    ({"dax": [{}]}, r"\[0\]: names no device"),
    ({"dax": [{"device": "pmem0"}]}, r"\[0\]\.device: expected a dax device name"),
    ({"dax": [{"match": {"node": "one"}}]}, r"\[0\]\.match\.node: expected a NUMA node number"),
    ({"dax": [{"match": {"resource": "0x20-0x10"}}]}, r"\[0\]\.match\.resource: .* ends before it starts"),
    ({"dax": [{"match": {"resource": "lots"}}]}, r"'lots' is not an address"),
    ({"dax": [{"match": {"uuid": "not-a-uuid"}}]}, r"\[0\]\.match\.uuid: expected a namespace UUID"),
    ({"dax": [{"match": {"colour": "red"}}]}, r"\[0\]\.match: unknown key 'colour'"),
    ({"dax": [{"device": "dax0.0", "mode": "devdax"}]}, r"\[0\]: unknown key 'mode'"),
    ({"dax": [{"device": "dax0.0", "memmap_on_memory": "yes"}]}, r"\[0\]\.memmap_on_memory: expected true or false"),
    ({"dax": [{"device": "dax0.0", "match": {"device": "dax1.0"}}]}, r"\[0\]: device 'dax0.0' and match.device"),
    ({"dax": [{"device": "dax0.0"}, {"match": []}]}, r"\[1\]\.match: expected a table"),
])
def test_check_config_names_the_bad_entry_and_key(table, message):
    [problem] = hotplugd_check_config({"sysfs": table})
    assert problem.key == "plugins.sysfs.dax"
    assert re.search(message, problem.message), problem.message
