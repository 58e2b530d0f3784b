"""Onlining on the fake tree: what gets written, the re-read, and every errno's outcome."""

from __future__ import annotations

import errno
from dataclasses import replace

import pytest

from hotplugd import BackendError, Outcome, ZoneRequest
from hotplugd.model import EHWPOISON
from hotplugd_sysfs.onlining import online_block
from hotplugd_sysfs.sysfs import Sysfs


@pytest.fixture
def host(fake_sysfs):
    fake_sysfs.add_blocks(range(8, 12), node=0)
    return fake_sysfs, Sysfs(fake_sysfs.sys, fake_sysfs.proc, fake_sysfs.io)


@pytest.mark.parametrize(("zone", "lands"), [(ZoneRequest.KERNEL, "Normal"), (ZoneRequest.MOVABLE, "Movable"),
                                             (ZoneRequest.AUTO, "Normal")])
def test_writes_the_zone_request_and_reports_the_zone_reread(host, zone, lands):
    fake, sysfs = host
    block = sysfs.read_block(8)
    result = online_block(sysfs, block, zone)
    assert fake.writes == [(8, zone.value)]
    assert (result.outcome, result.zone) == (Outcome.ONLINED, lands)
    assert fake.state(8) == "online" and fake.valid_zones(8) == (lands,)


def test_zone_comes_from_the_reread_not_the_request(host):
    fake, sysfs = host
    block = sysfs.read_block(9)
    fake.before_write.append(lambda index, value: fake.set_state(index, "offline", ("Movable",)))
    result = online_block(sysfs, block, ZoneRequest.AUTO)
    assert result.zone == "Movable"


def test_another_onliner_first_is_already_online(host):
    fake, sysfs = host
    block = sysfs.read_block(9)
    fake.set_state(9, "online", ("Movable",))  # e.g. a udev rule won the race
    result = online_block(sysfs, block, ZoneRequest.KERNEL)
    assert (result.outcome, result.zone, result.errno) == (Outcome.ALREADY_ONLINE, "Movable", errno.EINVAL)
    assert result.outcome.success


def test_einval_while_still_offline_is_permanent(host):
    fake, sysfs = host
    fake.fail(10, errno.EINVAL)
    result = online_block(sysfs, sysfs.read_block(10), ZoneRequest.MOVABLE)
    assert (result.outcome, result.errno) == (Outcome.PERMANENT, errno.EINVAL)
    assert fake.state(10) == "offline"


def test_einval_for_an_impossible_zone_is_permanent(host):
    fake, sysfs = host
    fake.set_state(10, "offline", ("Normal",))  # the kernel refuses online_movable here
    result = online_block(sysfs, sysfs.read_block(10), ZoneRequest.MOVABLE)
    assert result.outcome is Outcome.PERMANENT


def test_a_successful_write_rereads_valid_zones_only(host, monkeypatch):
    fake, sysfs = host
    block = sysfs.read_block(8)
    names = []
    real = fake.io.read
    monkeypatch.setattr(fake.io, "read", lambda path: names.append(path.name) or real(path))
    assert online_block(sysfs, block, ZoneRequest.MOVABLE).zone == "Movable"
    assert names == ["valid_zones"]


def test_offline_again_right_after_the_write_is_an_error(host, monkeypatch):
    fake, sysfs = host
    block = sysfs.read_block(8)
    real = fake.io.write

    def write_then_offline(path, value):  # another agent offlines the block at once
        real(path, value)
        fake.set_state(8, "offline", ("Normal", "Movable"))

    monkeypatch.setattr(fake.io, "write", write_then_offline)
    result = online_block(sysfs, block, ZoneRequest.AUTO)
    assert result.outcome is Outcome.ERROR and "state reads 'offline'" in result.detail


def test_a_state_no_kernel_spells_is_this_blocks_error_naming_the_file(host, monkeypatch):
    """What a plain file written over without truncation reads ("online" over "offline"): an error outcome
    naming the file and its text, never an exception out of the backend (the daemon logged a traceback)."""
    fake, sysfs = host
    block = sysfs.read_block(8)
    real = fake.io.write

    def write_garbled(path, value):
        real(path, value)
        fake.set_state(8, "onlinee", ("Normal", "Movable"))

    monkeypatch.setattr(fake.io, "write", write_garbled)
    result = online_block(sysfs, block, ZoneRequest.AUTO)
    assert result.outcome is Outcome.ERROR
    assert "memory8/state reads 'onlinee', which is no memory block state" in result.detail


def test_a_refused_zone_of_a_block_with_unknown_zones_is_narrowed_and_written_again(host):
    fake, sysfs = host
    fake.set_state(10, "offline", ("Normal",))  # the kernel refuses online_movable here
    block = replace(sysfs.read_block(10), valid_zones=())  # as queued from a fresh add
    result = online_block(sysfs, block, ZoneRequest.MOVABLE)
    assert (result.outcome, result.zone) == (Outcome.ONLINED, "Normal")
    assert fake.writes == [(10, "online_movable"), (10, "online_kernel")]


def test_a_refused_auto_online_is_not_written_again(host):
    fake, sysfs = host
    fake.fail(10, errno.EINVAL)
    block = replace(sysfs.read_block(10), valid_zones=())
    assert online_block(sysfs, block, ZoneRequest.AUTO).outcome is Outcome.PERMANENT
    assert fake.writes == [(10, "online")]


@pytest.mark.parametrize(("code", "outcome"), [
    (errno.EBUSY, Outcome.TRANSIENT),
    (errno.ENOMEM, Outcome.TRANSIENT),
    (errno.ENOENT, Outcome.GONE),
    (EHWPOISON, Outcome.PERMANENT),
    (errno.EIO, Outcome.ERROR),
])
def test_errno_mapping(host, code, outcome):
    fake, sysfs = host
    fake.fail(11, code)
    result = online_block(sysfs, sysfs.read_block(11), ZoneRequest.KERNEL)
    assert (result.outcome, result.errno) == (outcome, code)
    assert fake.state(11) == "offline"


def test_transient_then_success(host):
    fake, sysfs = host
    fake.fail(11, errno.EBUSY)
    block = sysfs.read_block(11)
    assert online_block(sysfs, block, ZoneRequest.KERNEL).outcome is Outcome.TRANSIENT
    assert online_block(sysfs, block, ZoneRequest.KERNEL).outcome is Outcome.ONLINED
    assert fake.writes == [(11, "online_kernel"), (11, "online_kernel")]


def test_a_removed_block_is_gone(host):
    fake, sysfs = host
    block = sysfs.read_block(8)
    fake.remove_block(8)
    assert online_block(sysfs, block, ZoneRequest.AUTO).outcome is Outcome.GONE


def test_removed_during_the_einval_reread_is_gone(host):
    fake, sysfs = host
    block = sysfs.read_block(8)
    fake.fail(8, errno.EINVAL)
    fake.before_write.append(lambda index, value: fake.remove_block(index))
    assert online_block(sysfs, block, ZoneRequest.AUTO).outcome is Outcome.GONE


@pytest.mark.parametrize("code", [errno.EACCES, errno.EPERM])
def test_no_permission_is_a_clear_backend_error(host, code):
    fake, sysfs = host
    fake.fail(8, code)
    with pytest.raises(BackendError, match=r"must run as root or with write access to .*memory8/state"):
        online_block(sysfs, sysfs.read_block(8), ZoneRequest.AUTO)


def test_the_fake_never_writes_outside_its_tree(fake_sysfs, tmp_path):
    with pytest.raises(AssertionError, match="outside the fake tree"):
        fake_sysfs.io.write(tmp_path.parent / "elsewhere", "online")


@pytest.mark.asyncio
async def test_a_run_is_written_back_to_back_in_one_worker_thread_call(fake_sysfs, monkeypatch):
    import anyio.to_thread

    from hotplugd_sysfs.backend import SysfsBackend

    fake_sysfs.add_blocks(range(8, 12), node=0)
    fake_sysfs.fail(10, errno.EBUSY)
    backend = SysfsBackend.from_options(fake_sysfs.options(netlink=False, batch=4), io=fake_sysfs.io)
    calls = []
    real = anyio.to_thread.run_sync

    async def counting(func, *args, **kwargs):
        calls.append(func.__name__)
        return await real(func, *args, **kwargs)

    monkeypatch.setattr(anyio.to_thread, "run_sync", counting)
    blocks = [backend.sysfs.read_block(i) for i in range(8, 12)]
    results = await backend.online_many([(b, ZoneRequest.MOVABLE) for b in blocks])
    assert backend.batch_size == 4 and calls == ["online_blocks"]
    assert [r.outcome for r in results] == [Outcome.ONLINED, Outcome.ONLINED, Outcome.TRANSIENT, Outcome.ONLINED]
    assert fake_sysfs.writes == [(i, "online_movable") for i in range(8, 12)]


# -- the seed's kernel (Anolis): a block held half-online ------------------------------------


def test_einval_on_a_half_online_block_is_kernel_deferred_not_permanent(host):
    fake, sysfs = host
    block = sysfs.read_block(9)
    fake.set_half_online(9, "Normal")  # state offline, online 1: the kernel's final phase is to come
    result = online_block(sysfs, block, ZoneRequest.AUTO)
    assert (result.outcome, result.errno, result.zone) == (Outcome.KERNEL_DEFERRED, errno.EINVAL, None)
    assert not result.outcome.success and "online reads 1" in result.detail
    assert fake.writes == [(9, "online")]  # not narrowed and written again
    assert (fake.state(9), fake.online_flag(9)) == ("offline", "1")


def test_einval_with_online_0_stays_permanent(host):
    fake, sysfs = host
    fake.fail(9, errno.EINVAL)
    assert fake.online_flag(9) == "0"
    assert online_block(sysfs, sysfs.read_block(9), ZoneRequest.KERNEL).outcome is Outcome.PERMANENT


def test_a_write_the_seed_kernel_takes_but_holds_half_online_is_kernel_deferred(host, monkeypatch):
    fake, sysfs = host
    real = fake.io.write

    def prepare_only(path, value):  # the write succeeds; the block is left after PREPARE
        real(path, value)
        fake.set_state(8, "offline", ("Normal", "Movable"))  # valid_zones lists the offline candidates
        fake.set_half_online(8, "Normal")

    monkeypatch.setattr(fake.io, "write", prepare_only)
    result = online_block(sysfs, sysfs.read_block(8), ZoneRequest.AUTO)
    assert (result.outcome, result.errno) == (Outcome.KERNEL_DEFERRED, None)
