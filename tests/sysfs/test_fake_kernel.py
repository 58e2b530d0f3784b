"""The fake sysfs tree's kernel: knob files, its own auto-online by the knobs, and the seed's kernel (Anolis).

``hotplugd_sysfs.testing.fakesysfs`` is public (plugin authors test on it too), so what
it plays is pinned down here, each point against ``docs/facts/ANOLIS.md`` or
mainline's ``mm/memory_hotplug.c``.
"""

from __future__ import annotations

import errno

import pytest

from hotplugd import Outcome, State, ZoneRequest
from hotplugd_sysfs import SysfsBackend
from hotplugd_sysfs.testing.fakesysfs import FakeSysfs

GIB = 1 << 30


def actions(events: list[bytes]) -> list[str]:
    """``add@…/memory8`` -> ``add 8``."""
    heads = (e.split(b"\0", 1)[0].decode() for e in events)
    return [f"{action} {devpath.rsplit('memory', 1)[1]}" for action, devpath in (h.split("@") for h in heads)]


@pytest.fixture
def anolis(tmp_path):
    fake = FakeSysfs(tmp_path / "anolis", nodes={0: "0-3", 1: "4-7"}, anolis=True)
    fake.set_param("parallel_hotplug_ratio", "50")
    fake.set_auto_online("online")
    return fake


def boot_memory(fake: FakeSysfs, node: int, size: int, first: int) -> None:
    """``size`` bytes of online Normal blocks on ``node`` (what the ratio is measured against)."""
    fake.add_blocks(range(first, first + size // fake.block_size), node=node, state="online", zones=("Normal",))


# -- knob files ----------------------------------------------------------------------------------


def test_the_knob_files_at_mainline_defaults(fake_sysfs, tmp_path):
    assert {n: fake_sysfs.knob(n) for n in ("auto_online_blocks", "online_policy", "auto_movable_ratio",
                                            "auto_movable_numa_aware", "parallel_hotplug_ratio")} == {
        "auto_online_blocks": "offline", "online_policy": "contig-zones", "auto_movable_ratio": "301",
        "auto_movable_numa_aware": "Y", "parallel_hotplug_ratio": None}  # mainline has no such parameter
    assert FakeSysfs(tmp_path / "seed", anolis=True).knob("parallel_hotplug_ratio") == "0"


@pytest.mark.parametrize(("name", "value", "reads"), [
    ("auto_online_blocks", "online_movable\n", "online_movable"),
    ("online_policy", "auto-movable", "auto-movable"),
    ("auto_movable_ratio", "0150", "150"),
    ("auto_movable_numa_aware", "0", "N"),
    ("auto_movable_numa_aware", "y", "Y"),
])
def test_a_knob_write_reads_back_as_the_kernel_stores_it(fake_sysfs, name, value, reads):
    fake_sysfs.io.write(fake_sysfs.knob_file(name), value)
    assert fake_sysfs.knob(name) == reads and fake_sysfs.knob_writes == [(name, value)]


@pytest.mark.parametrize(("name", "value"), [("auto_online_blocks", "yes"), ("online_policy", "zone-ratio"),
                                             ("auto_movable_ratio", "-1"), ("auto_movable_numa_aware", "maybe")])
def test_a_value_the_kernel_refuses_is_einval(fake_sysfs, name, value):
    before = fake_sysfs.knob(name)
    with pytest.raises(OSError) as info:
        fake_sysfs.io.write(fake_sysfs.knob_file(name), value)
    assert info.value.errno == errno.EINVAL and fake_sysfs.knob(name) == before


def test_a_knob_this_kernel_lacks_cannot_be_written(fake_sysfs):
    with pytest.raises(OSError) as info:
        fake_sysfs.io.write(fake_sysfs.knob_file("parallel_hotplug_ratio"), "50")
    assert info.value.errno == errno.ENOENT and fake_sysfs.knob("parallel_hotplug_ratio") is None


def test_a_read_only_knob_says_so_and_refuses_writes_with_erofs(fake_sysfs):
    fake_sysfs.set_read_only("auto_online_blocks")
    path = fake_sysfs.knob_file("auto_online_blocks")
    assert not fake_sysfs.io.writable(path) and fake_sysfs.io.writable(fake_sysfs.knob_file("online_policy"))
    with pytest.raises(OSError) as info:
        fake_sysfs.io.write(path, "online")
    assert info.value.errno == errno.EROFS and fake_sysfs.knob("auto_online_blocks") == "offline"


# -- the kernel's own auto-online ----------------------------------------------------------------


def test_with_auto_online_off_a_hot_add_stays_offline(fake_sysfs):
    events = fake_sysfs.hot_add(range(8, 10))
    assert actions(events) == ["add 8", "add 9"]
    assert fake_sysfs.online_indices() == set() and fake_sysfs.kernel_events == []


@pytest.mark.parametrize(("mode", "zones", "lands"), [
    ("online_kernel", ("Normal", "Movable"), "Normal"),
    ("online_movable", ("Normal", "Movable"), "Movable"),
    ("online", ("Normal", "Movable"), "Normal"),  # contig-zones: the kernel's default zone
    ("online", ("Movable",), "Movable"),  # ... unless the block cannot join Normal
])
def test_the_kernel_onlines_into_the_zone_the_knobs_say(fake_sysfs, mode, zones, lands):
    fake_sysfs.set_auto_online(mode)
    events = fake_sysfs.hot_add(range(8, 10), zones=zones)
    assert actions(events) == ["add 8", "add 9", "online 8", "online 9"]  # one add_memory(): adds first
    assert [fake_sysfs.valid_zones(i) for i in (8, 9)] == [(lands,), (lands,)]
    assert [(fake_sysfs.state(i), fake_sysfs.online_flag(i)) for i in (8, 9)] == [("online", "1")] * 2
    assert fake_sysfs.kernel_events == events[2:] and fake_sysfs.writes == []


def test_auto_movable_keeps_movable_within_the_ratio_of_the_nodes_kernel_memory(tmp_path):
    fake = FakeSysfs(tmp_path / "host", nodes={0: "0-3", 1: "4-7"})
    boot_memory(fake, 0, GIB // 2, first=0)  # 4 blocks of Normal on node 0, none on node 1
    for name, value in (("online_policy", "auto-movable"), ("auto_movable_ratio", "100"),
                        ("auto_online_blocks", "online")):
        fake.io.write(fake.knob_file(name), value)
    fake.hot_add(range(8, 14), node=0)
    # Movable up to 4 blocks against 4 of Normal; the 5th goes Normal, which makes room for the 6th.
    assert [fake.valid_zones(i)[0] for i in range(8, 14)] == ["Movable"] * 4 + ["Normal", "Movable"]
    fake.hot_add([40], node=1)  # numa-aware: node 1 has no kernel memory to balance against
    assert fake.valid_zones(40) == ("Normal",)
    fake.io.write(fake.knob_file("auto_movable_numa_aware"), "N")
    fake.hot_add([41], node=1)  # the whole host: 6 blocks of kernel memory, 5 movable
    assert fake.valid_zones(41) == ("Movable",)


def test_the_kernel_can_leave_blocks_offline(fake_sysfs):
    fake_sysfs.set_auto_online("online_movable")
    events = fake_sysfs.hot_add(range(8, 11), left_offline=[9])
    assert actions(events) == ["add 8", "add 9", "add 10", "online 8", "online 10"]
    assert fake_sysfs.state(9) == "offline" and fake_sysfs.online_flag(9) == "0"


def test_an_auto_online_into_a_zone_the_block_cannot_join_leaves_it_offline(fake_sysfs):
    fake_sysfs.set_auto_online("online_kernel")
    events = fake_sysfs.hot_add([8], zones=("Movable",))
    assert actions(events) == ["add 8"] and fake_sysfs.state(8) == "offline"


def test_the_online_attribute_onlines_and_offlines(fake_sysfs):
    fake_sysfs.add_block(8)
    online = fake_sysfs.memory / "memory8" / "online"
    fake_sysfs.io.write(online, "1")
    assert (fake_sysfs.state(8), fake_sysfs.online_flag(8)) == ("online", "1")
    fake_sysfs.io.write(online, "1")  # online already: success, no change
    fake_sysfs.io.write(online, "0")
    assert (fake_sysfs.state(8), fake_sysfs.online_flag(8)) == ("offline", "0")
    assert actions(fake_sysfs.kernel_events) == ["online 8", "offline 8"]


# -- the seed's kernel (Anolis) ------------------------------------------------------------------


def test_the_first_block_into_an_empty_zone_onlines_the_rest_wait_half_online(anolis):
    events = anolis.hot_add(range(8, 12), node=1)
    assert actions(events) == ["add 8", "add 9", "add 10", "add 11"] + [f"online {i}" for i in range(8, 12)]
    assert anolis.state(8) == "online"
    assert [(anolis.state(i), anolis.online_flag(i)) for i in range(9, 12)] == [("offline", "1")] * 3
    assert anolis.valid_zones(9) == ("Normal", "Movable")  # the offline candidates
    sent = len(anolis.kernel_events)
    assert anolis.finish_deferred() == [9, 10, 11]
    assert [(anolis.state(i), anolis.valid_zones(i)) for i in range(9, 12)] == [("online", ("Normal",))] * 3
    assert len(anolis.kernel_events) == sent  # the final phase sends no uevent
    assert anolis.finish_deferred() == []


def test_a_zone_the_node_already_has_defers_its_first_block_too(anolis):
    boot_memory(anolis, 0, GIB // 4, first=0)
    anolis.hot_add([8], node=0)
    assert (anolis.state(8), anolis.online_flag(8)) == ("offline", "1")


def test_ratio_0_means_no_deferral(anolis):
    anolis.set_param("parallel_hotplug_ratio", "0")
    anolis.hot_add(range(8, 11))
    assert anolis.online_indices() == {8, 9, 10} and anolis.deferred == {}


def test_a_half_online_block_refuses_online_and_takes_1_unchanged(anolis):
    anolis.hot_add(range(8, 10))
    with pytest.raises(OSError) as info:
        anolis.io.write(anolis.memory / "memory9" / "state", "online")
    assert info.value.errno == errno.EINVAL
    anolis.io.write(anolis.memory / "memory9" / "online", "1")
    assert (anolis.state(9), anolis.online_flag(9)) == ("offline", "1") and 9 in anolis.deferred


def test_the_final_phase_does_nothing_while_auto_online_is_off(anolis):
    anolis.hot_add(range(8, 10))
    anolis.set_auto_online("offline")
    assert anolis.finish_deferred() == [] and anolis.state(9) == "offline"


def test_a_user_space_online_into_a_populated_zone_is_held_half_online_too(anolis):
    """ANOLIS.md (inferred): the PREPARE path is taken whoever onlines, while the ratio is set."""
    anolis.set_auto_online("offline")
    anolis.hot_add(range(8, 10))
    anolis.io.write(anolis.memory / "memory8" / "state", "online_kernel")
    anolis.io.write(anolis.memory / "memory9" / "state", "online_kernel")
    assert anolis.state(8) == "online" and (anolis.state(9), anolis.online_flag(9)) == ("offline", "1")


@pytest.mark.asyncio
async def test_the_sysfs_backend_on_the_seed_kernel(anolis):
    """hotplugd's write to a held block is KERNEL_DEFERRED; verify() sees it held, then online once finished."""
    anolis.add_blocks(range(8, 10), node=0)  # added while the backend looked: offline in its scan
    backend = SysfsBackend.from_options(anolis.options(), io=anolis.io)
    blocks = (await backend.scan()).blocks
    anolis.kernel_online(8, "online")
    anolis.kernel_online(9, "online")  # the kernel got there first: 8 online, 9 held
    results = await backend.online_many([(b, ZoneRequest.AUTO) for b in blocks])
    assert [r.outcome for r in results] == [Outcome.ALREADY_ONLINE, Outcome.KERNEL_DEFERRED]
    assert [b.state for b in await backend.verify(blocks)] == [State.ONLINE, State.KERNEL_DEFERRED]
    anolis.finish_deferred()
    [_, done] = await backend.verify(blocks)
    assert (done.state, done.zone) == (State.ONLINE, "Normal")


def test_the_kit_s_public_names_import_from_where_third_parties_import_them():
    """fakesysfs.py was split by concept (the tree, its kernel in fakehotplug.py, its io in fakeio.py): the names
    plugin authors import from ``hotplugd_sysfs.testing`` and ``hotplugd_sysfs.testing.fakesysfs`` still work."""
    from hotplugd_sysfs import testing
    from hotplugd_sysfs.testing import fakedax, fakehotplug, fakeio, fakesysfs

    assert testing.FakeSysfs is fakesysfs.FakeSysfs and testing.FakeDax is fakedax.FakeDax
    assert testing.FakeSysfsIO is fakesysfs.FakeSysfsIO is fakeio.FakeSysfsIO
    assert issubclass(fakesysfs.FakeSysfs, fakehotplug.KernelHotplug)
    assert set(fakesysfs.__all__) == {"FakeSysfs", "FakeSysfsIO"} and set(testing.__all__) >= {"FakeSysfs", "FakeDax"}
