"""The writer process: its protocol, the answers' judgement, and losing a writer mid-run.

The child writes real files, so these tests give it plain files under a temp
dir (the fake tree without its kernel-playing ``FakeSysfsIO``): a write just
lands in ``state``, and ``valid_zones`` says what the test wrote there.
"""

from __future__ import annotations

import errno
import io
import os
import signal
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio
import pytest

from hotplugd import Outcome, ZoneRequest
from hotplugd_sysfs import SysfsBackend, writer_child
from hotplugd_sysfs.onlining import Written, judge, settle
from hotplugd_sysfs.sysfs import Sysfs
from hotplugd_sysfs.writer_child import BadRequest, open_dir, parse, serve
from hotplugd_sysfs.writers import Writers, parse_reply


@asynccontextmanager
async def started(sysfs: Sysfs) -> AsyncIterator[Writers]:
    writers = Writers(sysfs)
    await writers.start()
    try:
        yield writers
    finally:
        await writers.aclose()


def written(fake, index):
    return (fake.memory / f"memory{index}" / "state").read_text()


@pytest.fixture
def plain(fake_sysfs):
    """The fake tree read and written through plain files (what a writer process sees)."""
    fake_sysfs.add_block(8, zones=("Movable",))
    fake_sysfs.add_block(9, zones=("Normal",))
    return fake_sysfs, Sysfs(fake_sysfs.sys, fake_sysfs.proc)


@pytest.fixture
def memory_dir(plain):
    """The fake tree's memory directory, open as the writer holds it."""
    fd = open_dir(str(plain[0].memory))
    yield fd
    os.close(fd)


# -- the child's protocol, in this process ------------------------------------------------


def test_child_writes_each_value_and_answers_with_valid_zones(plain, memory_dir):
    fake, _ = plain
    replies = io.BytesIO()
    serve(memory_dir, io.BytesIO(b"8 online_movable 9 online_kernel\n7 online\n"), replies)
    assert replies.getvalue().splitlines() == [b"8 0 Movable", b"9 0 Normal", b"7 %d" % errno.ENOENT]
    assert written(fake, 8).startswith("online_movable") and written(fake, 9).startswith("online_kernel")


class Flushes(io.BytesIO):
    """Replies that record what had been written at each flush."""

    def __init__(self) -> None:
        super().__init__()
        self.flushed: list[int] = []

    def flush(self) -> None:
        self.flushed.append(len(self.getvalue().splitlines()))


@pytest.mark.parametrize(("every", "flushed"), [(3600.0, [2]), (0.0, [1, 2, 2])])
def test_child_flushes_a_runs_replies_at_its_end_and_every_flush_period(memory_dir, monkeypatch, every, flushed):
    monkeypatch.setattr(writer_child, "FLUSH_EVERY", every)
    replies = Flushes()
    serve(memory_dir, io.BytesIO(b"8 online 9 online\n"), replies)
    assert replies.flushed == flushed


def test_child_stops_once_its_daemon_is_gone(plain, memory_dir):
    fake, _ = plain
    replies = io.BytesIO()
    serve(memory_dir, io.BytesIO(b"8 online 9 online\n"), replies, parent=os.getppid() + 1)
    assert replies.getvalue() == b"" and written(fake, 8).startswith("offline")
    serve(memory_dir, io.BytesIO(b"8 online\n"), replies, parent=os.getppid())
    assert replies.getvalue() == b"8 0 Movable\n"


def test_child_reports_a_failed_valid_zones_read(plain, memory_dir):
    fake, _ = plain
    (fake.memory / "memory8" / "valid_zones").unlink()
    replies = io.BytesIO()
    serve(memory_dir, io.BytesIO(b"8 online\n"), replies)
    assert replies.getvalue() == b"8 0 !%d\n" % errno.ENOENT


def test_child_without_its_memory_directory_says_which(tmp_path, capsys):
    assert writer_child.main(["writer_child.py", str(tmp_path / "nope")]) == 2
    assert f"cannot open {tmp_path / 'nope'}" in capsys.readouterr().err


@pytest.mark.parametrize("line", [b"\n", b"8\n", b"8 offline\n", b"x online\n", b"-1 online\n", b"8 online 9\n"])
def test_child_refuses_a_malformed_request(line):
    with pytest.raises(BadRequest):
        parse(line)


@pytest.mark.parametrize(("line", "answer"), [
    (b"8 0 Movable\n", Written(0, ("Movable",))),
    (b"8 0 Normal Movable\n", Written(0, ("Normal", "Movable"))),
    (b"8 0 \n", Written(0, ())),
    (b"8 0 !19\n", Written(0, zones_errno=19)),
    (b"8 16\n", Written(16)),
])
def test_reply_lines_parse(line, answer):
    assert parse_reply(line, 8) == answer


@pytest.mark.parametrize("line", [b"9 0 Movable\n", b"8\n", b"eight 0\n"])
def test_a_reply_out_of_step_is_refused(line):
    with pytest.raises(ValueError):
        parse_reply(line, 8)


# -- judging an answer ------------------------------------------------------------------


@pytest.mark.parametrize(("answer", "outcome", "zone"), [
    (Written(0, ("Movable",)), Outcome.ONLINED, "Movable"),
    (Written(0, ()), Outcome.ONLINED, None),
    (Written(0, zones_errno=errno.ENODEV), Outcome.GONE, None),
    (Written(errno.EBUSY), Outcome.TRANSIENT, None),
    (Written(errno.ENOENT), Outcome.GONE, None),
    (Written(errno.EIO), Outcome.ERROR, None),
])
def test_answers_that_settle_themselves(answer, outcome, zone):
    result = judge(answer)
    assert result is not None and (result.outcome, result.zone) == (outcome, zone)


@pytest.mark.parametrize("answer", [Written(errno.EINVAL), Written(errno.EACCES), Written(0, ("Normal", "Movable")),
                                    Written(0, zones_errno=errno.EIO)])
def test_answers_that_need_sysfs_read_again(answer):
    assert judge(answer) is None


def test_einval_on_a_block_now_online_settles_as_already_online(fake_sysfs):
    fake_sysfs.add_block(8)
    sysfs = Sysfs(fake_sysfs.sys, fake_sysfs.proc, fake_sysfs.io)
    block = sysfs.read_block(8)
    fake_sysfs.set_state(8, "online", ("Movable",))
    result = settle(sysfs, block, ZoneRequest.KERNEL, Written(errno.EINVAL))
    assert (result.outcome, result.zone) == (Outcome.ALREADY_ONLINE, "Movable")


def test_einval_on_a_half_online_block_settles_as_kernel_deferred(fake_sysfs):
    fake_sysfs.add_block(8)
    sysfs = Sysfs(fake_sysfs.sys, fake_sysfs.proc, fake_sysfs.io)
    block = sysfs.read_block(8)
    fake_sysfs.set_half_online(8)  # the seed's kernel: state offline, online 1
    result = settle(sysfs, block, ZoneRequest.KERNEL, Written(errno.EINVAL))
    assert (result.outcome, result.errno) == (Outcome.KERNEL_DEFERRED, errno.EINVAL)


def test_offline_again_after_the_write_settles_as_an_error(fake_sysfs):
    fake_sysfs.add_block(8)
    sysfs = Sysfs(fake_sysfs.sys, fake_sysfs.proc, fake_sysfs.io)
    result = settle(sysfs, sysfs.read_block(8), ZoneRequest.AUTO, Written(0, ("Normal", "Movable")))
    assert result.outcome is Outcome.ERROR and "offline" in result.detail


# -- real writer processes ------------------------------------------------------------------


@pytest.mark.asyncio
async def test_a_writer_process_onlines_a_run(plain):
    fake, sysfs = plain
    async with started(sysfs) as writers:
        items = [(sysfs.read_block(8), ZoneRequest.MOVABLE), (sysfs.read_block(9), ZoneRequest.KERNEL)]
        results = await writers.online_many(items)
        again = await writers.online_many(items[:1])
    assert [(r.outcome, r.zone) for r in results] == [(Outcome.ONLINED, "Movable"), (Outcome.ONLINED, "Normal")]
    assert again[0].outcome is Outcome.ONLINED
    assert written(fake, 9).startswith("online_kernel")
    assert writers.started == 1  # the one writer served both calls


@pytest.mark.asyncio
async def test_a_dead_writer_is_replaced_and_its_run_written_from_a_thread(plain):
    fake, sysfs = plain
    async with started(sysfs) as writers:
        (writer,) = writers._idle
        os.kill(writer.process.pid, signal.SIGKILL)
        await writer.process.wait()
        results = await writers.online_many([(sysfs.read_block(8), ZoneRequest.MOVABLE)])
        assert (results[0].outcome, results[0].zone) == (Outcome.ONLINED, "Movable")
        assert written(fake, 8).startswith("online_movable")
        assert writers._idle == []  # the dead one was dropped
        await writers.online_many([(sysfs.read_block(9), ZoneRequest.KERNEL)])
        assert writers.started == 2


@pytest.mark.asyncio
async def test_a_writer_cancelled_mid_run_is_dropped(plain):
    _, sysfs = plain
    async with started(sysfs) as writers:
        with anyio.CancelScope() as scope:
            scope.cancel()
            await writers.online_many([(sysfs.read_block(8), ZoneRequest.MOVABLE)])
        assert writers._idle == []
        results = await writers.online_many([(sysfs.read_block(9), ZoneRequest.KERNEL)])
        assert results[0].outcome is Outcome.ONLINED and writers.started == 2


@pytest.mark.asyncio
async def test_a_python_that_cannot_start_is_a_clear_error(plain):
    from hotplugd import BackendError

    _, sysfs = plain
    with pytest.raises(BackendError, match="/nonexistent/python"):
        await Writers(sysfs, python="/nonexistent/python").start()


def test_backend_writes_through_a_process_unless_io_is_injected(fake_sysfs):
    assert SysfsBackend.from_options(fake_sysfs.options()).writers is not None
    assert SysfsBackend.from_options(fake_sysfs.options(writer="thread")).writers is None
    injected = SysfsBackend.from_options(fake_sysfs.options(), io=fake_sysfs.io)
    assert injected.writers is None and "worker threads" in injected.describe()


def test_an_unknown_writer_names_the_key(fake_sysfs):
    with pytest.raises(ValueError, match="plugins.sysfs.writer.*'fork'"):
        SysfsBackend.from_options(fake_sysfs.options(writer="fork"))


@pytest.mark.asyncio
async def test_a_writer_that_exits_at_start_is_a_clear_error(plain, tmp_path):
    from hotplugd import BackendError

    _, sysfs = plain
    script = tmp_path / "python"
    script.write_text("#!/bin/sh\nexit 3\n")
    script.chmod(0o755)
    with pytest.raises(BackendError, match=r"did not start \(exit status 3\)"):
        await Writers(sysfs, python=str(script)).start()


@pytest.mark.asyncio
async def test_a_writer_outlives_sigterm_and_ends_with_its_input(plain):
    _, sysfs = plain
    async with started(sysfs) as writers:
        (writer,) = writers._idle
        os.kill(writer.process.pid, signal.SIGTERM)  # systemd's stop reaches the whole cgroup
        results = await writers.online_many([(sysfs.read_block(8), ZoneRequest.MOVABLE)])
        assert results[0].outcome is Outcome.ONLINED and writers.started == 1
    assert writer.process.returncode == 0  # its input closed: it ended on its own
