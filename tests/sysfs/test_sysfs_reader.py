"""Reading a host from a fake sysfs tree: scan, nodes, CPUs, MemAvailable."""

from __future__ import annotations

import pytest

from hotplugd import Block, State
from hotplugd_sysfs.sysfs import NotRegistered, Sysfs, parse_cpulist, parse_meminfo, parse_zones
from hotplugd_sysfs.testing.fakesysfs import FakeSysfs


@pytest.fixture
def two_nodes(tmp_path) -> FakeSysfs:
    fake = FakeSysfs(tmp_path, block_size=256 << 20, nodes={0: "0-3,8-11", 1: "4-7"}, mem_available=3 << 30)
    fake.add_blocks(range(0, 4), node=0, state="online", zones=("Normal",))
    fake.add_blocks(range(4, 6), node=1, zones=("Normal", "Movable"))
    fake.add_block(9, node=2, zones=("Movable",))  # a CPU-less (CXL) node
    return fake


def sysfs_of(fake: FakeSysfs) -> Sysfs:
    return Sysfs(fake.sys, fake.proc, fake.io)


def test_block_size_is_hex(two_nodes):
    assert (two_nodes.memory / "block_size_bytes").read_text().strip() == "10000000"
    assert sysfs_of(two_nodes).block_size == 256 << 20


def test_scan_reads_every_block_with_its_node_state_and_zones(two_nodes):
    infos, unregistered = sysfs_of(two_nodes).scan()
    assert unregistered == []
    assert [i.block.index for i in infos] == [0, 1, 2, 3, 4, 5, 9]
    assert infos[0].block == Block(0, 256 << 20, 0, State.ONLINE, ("Normal",))
    assert infos[4].block == Block(4, 256 << 20, 1, State.OFFLINE, ("Normal", "Movable"))
    assert infos[6].block.node == 2 and infos[6].block.valid_zones == ("Movable",)
    assert all(i.phys_index == i.block.index and i.removable for i in infos)


def test_node_comes_from_the_link_in_the_block_directory(two_nodes):
    link = two_nodes.memory / "memory5" / "node1"
    assert link.is_symlink()
    assert sysfs_of(two_nodes).node_of(5) == 1


def test_the_last_node_is_tried_first_and_another_node_is_still_found(two_nodes):
    listed = []
    two_nodes.before_listdir.append(lambda path: listed.append(path.name))
    sysfs = sysfs_of(two_nodes)
    assert [sysfs.node_of(i) for i in (4, 5, 0, 1, 9)] == [1, 1, 0, 0, 2]
    assert listed == ["memory4", "memory0", "memory9"]  # 5 and 1 only had their last node's link checked
    two_nodes.add_block(12, node=1, registered=False)
    assert sysfs.node_of(12) is None and listed[-1] == "memory12"


def test_cpus_per_node_from_cpulist(two_nodes):
    assert sysfs_of(two_nodes).cpus_per_node() == {0: 8, 1: 4, 2: 0}


def test_topology(two_nodes):
    topology = sysfs_of(two_nodes).topology()
    assert topology.cpus_per_node == {0: 8, 1: 4, 2: 0}
    assert topology.mem_available == 3 << 30
    assert topology.block_size == 256 << 20
    assert not topology.kernel_onlines
    two_nodes.set_auto_online("online_movable")
    assert sysfs_of(two_nodes).topology().kernel_onlines


def test_a_removed_block_reads_as_none_and_leaves_the_scan(two_nodes):
    sysfs = sysfs_of(two_nodes)
    two_nodes.remove_block(4)
    assert sysfs.read_block(4) is None and sysfs.read_info(4) is None
    assert 4 not in [i.block.index for i in sysfs.scan()[0]]
    assert sysfs.read_blocks([3, 4, 5])[0].keys() == {3, 5}


def test_census_matches_the_scan(two_nodes):
    sysfs = sysfs_of(two_nodes)
    assert sysfs.census() == [i.block for i in sysfs.scan()[0]]


def test_a_block_without_removable_still_scans(two_nodes):
    (two_nodes.memory / "memory4" / "removable").unlink()  # gone from recent kernels
    assert sysfs_of(two_nodes).read_info(4).removable


@pytest.mark.parametrize(("text", "count"), [("0-3", 4), ("0-3,8-11\n", 8), ("5", 1), ("", 0), ("\n", 0),
                                             ("0,2,4-5", 4)])
def test_parse_cpulist(text, count):
    assert parse_cpulist(text) == count


def test_parse_meminfo_and_zones():
    assert parse_meminfo("MemTotal: 10 kB\nMemAvailable:   2048 kB\n") == 2 << 20
    assert parse_meminfo("MemTotal: 10 kB\n") is None
    assert parse_zones("Normal Movable\n") == ("Normal", "Movable")
    assert parse_zones("none\n") == ()


def test_every_path_is_built_from_the_roots(two_nodes):
    sysfs = sysfs_of(two_nodes)
    for path in (sysfs.memory_dir, sysfs.node_dir, sysfs.params_dir, sysfs.state_path(3)):
        assert path.is_relative_to(two_nodes.sys)
    assert Sysfs().memory_dir.as_posix() == "/sys/devices/system/memory"


# -- blocks announced before the kernel links them to a node ---------------------------


def test_an_unregistered_block_is_not_read_past_its_directory(two_nodes):
    sysfs = sysfs_of(two_nodes)
    two_nodes.add_block(12, registered=False)  # the fake raises if valid_zones were read
    with pytest.raises(NotRegistered):
        sysfs.read_block(12)
    assert sysfs.read_blocks([5, 12]) == ({5: sysfs.read_block(5)}, [12])
    assert 12 not in [b.index for b in sysfs.census()]


def test_scan_waits_for_registration(two_nodes):
    sysfs = sysfs_of(two_nodes)
    two_nodes.add_block(12, node=1, registered=False)
    looks = []

    def register_on_second_look(path):
        if path.name == "memory12":
            looks.append(path)
            if len(looks) == 2:
                two_nodes.register(12, node=1)

    two_nodes.before_listdir.append(register_on_second_look)
    infos, unregistered = sysfs.scan()
    assert unregistered == [] and infos[-1].block.index == 12 and infos[-1].block.node == 1


def test_scan_gives_up_on_a_block_that_never_registers(two_nodes):
    sysfs = sysfs_of(two_nodes)
    sysfs.register_wait = 0.0
    two_nodes.add_block(12, registered=False)
    infos, unregistered = sysfs.scan()
    assert unregistered == [12] and 12 not in [i.block.index for i in infos]


def test_without_numa_every_block_is_on_node_0(tmp_path):
    fake = FakeSysfs(tmp_path)
    fake.add_block(3, registered=False)
    for path in sorted(fake.node.rglob("*"), reverse=True):
        path.unlink() if path.is_file() or path.is_symlink() else path.rmdir()
    fake.node.rmdir()
    sysfs = sysfs_of(fake)
    assert sysfs.read_block(3).node == 0
    assert sysfs.cpus_per_node().keys() == {0}


@pytest.mark.parametrize(("size", "calls"), [(0, 1), (7, 1), (4095, 1), (4096, 2), (4097, 3), (12288, 4)])
def test_an_attribute_is_read_whole_with_one_read_when_it_is_shorter_than_a_page(tmp_path, monkeypatch, size, calls):
    """A read shorter than asked for has all there is: no second read(2) to find the end (a syscall per
    attribute, on the guests' read-back of every block); a page or more is read on to its end."""
    import os

    from hotplugd_sysfs.sysfs import SysfsIO

    path = tmp_path / "attr"
    path.write_bytes(b"x" * size)
    reads = []
    real = os.read
    monkeypatch.setattr(os, "read", lambda fd, n: reads.append(n) or real(fd, n))
    assert SysfsIO().read(path) == "x" * size
    assert len(reads) == calls
