"""The kernel's onlining knobs through the sysfs backend, and ``verify()`` of the blocks another onliner onlined."""

from __future__ import annotations

import pytest

from hotplugd import HOST_DOMAIN, KNOB_NAMES, BackendError, Block, State
from hotplugd_sysfs import SysfsBackend
from hotplugd_sysfs.knobpaths import KNOB_FILES
from hotplugd_sysfs.testing.fakesysfs import FakeSysfs


@pytest.fixture
def anolis(tmp_path):
    """The seed's kernel: every knob there is, ``parallel_hotplug_ratio`` included."""
    return FakeSysfs(tmp_path / "anolis", anolis=True)


def backend_of(fake: FakeSysfs) -> SysfsBackend:
    return SysfsBackend.from_options(fake.options(), io=fake.io)


def test_every_knob_of_the_model_has_a_file():
    assert tuple(KNOB_FILES) == KNOB_NAMES


@pytest.mark.asyncio
async def test_every_knob_is_read_under_the_configured_root(anolis):
    anolis.set_auto_online("online_movable")
    anolis.set_param("auto_movable_ratio", "200")
    knobs = await backend_of(anolis).kernel_knobs()
    assert dict(knobs.values) == {"auto_online_blocks": "online_movable", "online_policy": "contig-zones",
                                  "auto_movable_ratio": "200", "auto_movable_numa_aware": "Y",
                                  "parallel_hotplug_ratio": "0"}
    assert knobs.read_only == frozenset()
    assert anolis.knob_writes == []  # reading writes nothing


@pytest.mark.asyncio
async def test_a_missing_file_is_an_absent_knob(fake_sysfs):
    (fake_sysfs.params / "auto_movable_numa_aware").unlink()  # a kernel before 5.15
    knobs = await backend_of(fake_sysfs).kernel_knobs()
    assert set(knobs.values) == {"auto_online_blocks", "online_policy", "auto_movable_ratio"}
    assert knobs.get("parallel_hotplug_ratio") is None and not knobs.writable("parallel_hotplug_ratio")


@pytest.mark.asyncio
async def test_an_unwritable_knob_is_read_only(anolis):
    anolis.set_read_only("online_policy", "parallel_hotplug_ratio")
    knobs = await backend_of(anolis).kernel_knobs()
    assert knobs.read_only == {"online_policy", "parallel_hotplug_ratio"}
    assert knobs.writable("auto_online_blocks") and not knobs.writable("online_policy")


@pytest.mark.asyncio
async def test_a_wholly_read_only_sysfs_makes_every_knob_read_only(fake_sysfs):
    fake_sysfs.writable = False  # e.g. ProtectKernelTunables= without the knobs' exception
    knobs = await backend_of(fake_sysfs).kernel_knobs()
    assert knobs.read_only == set(knobs.values) and knobs.values


@pytest.mark.asyncio
async def test_another_domain_has_no_knobs_here(fake_sysfs):
    backend = backend_of(fake_sysfs)
    assert await backend.kernel_knobs("guest1") is None
    with pytest.raises(BackendError, match="'guest1'"):
        await backend.set_kernel_knobs({"auto_online_blocks": "online"}, "guest1")


@pytest.mark.asyncio
async def test_knobs_are_written_in_order_and_read_back(anolis):
    backend = backend_of(anolis)
    values = {"online_policy": "auto-movable", "auto_movable_ratio": "150", "parallel_hotplug_ratio": "50",
              "auto_online_blocks": "online"}
    await backend.set_kernel_knobs(values, HOST_DOMAIN)
    assert anolis.knob_writes == list(values.items())
    assert {k: v for k, v in (await backend.kernel_knobs()).values.items() if k in values} == values


@pytest.mark.asyncio
async def test_a_read_only_knob_names_its_file_and_errno(fake_sysfs):
    fake_sysfs.set_read_only("online_policy")
    backend = backend_of(fake_sysfs)
    with pytest.raises(BackendError, match=r"cannot write 'auto-movable' to \S*/memory_hotplug/parameters/"
                                           r"online_policy: EROFS") as info:
        await backend.set_kernel_knobs({"auto_online_blocks": "online", "online_policy": "auto-movable"})
    assert fake_sysfs.knob_writes == [("auto_online_blocks", "online")]  # in order, up to the failure
    assert "Traceback" not in str(info.value)


@pytest.mark.asyncio
async def test_a_value_the_kernel_refuses_is_einval_naming_the_file(fake_sysfs):
    with pytest.raises(BackendError, match=r"auto_online_blocks: EINVAL"):
        await backend_of(fake_sysfs).set_kernel_knobs({"auto_online_blocks": "sometimes"})
    assert fake_sysfs.knob("auto_online_blocks") == "offline"


@pytest.mark.asyncio
async def test_a_name_that_is_no_knob_is_refused_by_name(fake_sysfs):
    with pytest.raises(BackendError, match="'memmap_on_memory' is not a kernel onlining knob"):
        await backend_of(fake_sysfs).set_kernel_knobs({"memmap_on_memory": "Y"})
    assert fake_sysfs.knob_writes == []


# -- verify ----------------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_verify_reads_back_state_and_zone(anolis):
    anolis.add_blocks(range(8, 11), node=0)
    backend = backend_of(anolis)
    blocks = (await backend.scan()).blocks
    anolis.set_state(8, "online", ("Movable",))
    anolis.set_half_online(9, "Normal")
    anolis.remove_block(10)
    online, deferred, gone = await backend.verify(blocks)
    assert (online.state, online.zone, online.node) == (State.ONLINE, "Movable", 0)
    assert deferred.state is State.KERNEL_DEFERRED and deferred.valid_zones == ("Normal", "Movable")
    assert gone is None


@pytest.mark.asyncio
async def test_verify_reads_only_the_blocks_asked_for(fake_sysfs):
    fake_sysfs.add_blocks(range(64), node=0)
    backend = backend_of(fake_sysfs)
    blocks = (await backend.scan()).blocks
    fake_sysfs.set_state(3, "online", ("Normal",))
    before = fake_sysfs.reads
    [online, offline] = await backend.verify([blocks[3], blocks[4]])
    assert (online.state, offline.state, offline.valid_zones) == (State.ONLINE, State.OFFLINE, ("Normal", "Movable"))
    assert fake_sysfs.reads - before == 5  # state + valid_zones; state + online + valid_zones


@pytest.mark.asyncio
async def test_verify_of_a_block_not_linked_to_its_node_does_not_read_valid_zones(fake_sysfs):
    fake_sysfs.add_block(5, registered=False)  # reading its valid_zones would oops the kernel
    backend = backend_of(fake_sysfs)
    [block] = await backend.verify([Block(5, fake_sysfs.block_size, node=0)])
    assert (block.state, block.valid_zones) == (State.OFFLINE, ())
