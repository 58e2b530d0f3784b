"""The simulated host's state file: what survives a restart, a torn write, and other settings' files."""

from __future__ import annotations

from pathlib import Path

import pytest

from hotplugd import BackendError, State, ZoneRequest
from hotplugd_simulated.host import Host
from hotplugd_simulated.settings import parse
from hotplugd_simulated.statefile import StateFile

from .simulated import FREE, run_to_the_end, simulated_daemon

pytestmark = pytest.mark.reliability

GiB = 1 << 30


def host(path: Path, **table: object) -> Host:
    settings = parse({"nodes": 1, "boot_memory": "1GiB", "cost_fixed": 0, "cost_init_per_page": 0,
                      "cost_free_per_page": 0, **table})
    return Host(settings, StateFile(path, "test", settings.block_size))


@pytest.mark.asyncio
async def test_a_restarted_host_has_the_blocks_of_the_last_one(tmp_path: Path) -> None:
    path = tmp_path / "state"
    first = host(path)
    first.restore()  # no file yet: the boot blocks become the first snapshot
    added = [first.plug(0, step=0).index for _ in range(4)]
    await first.online(added[0], ZoneRequest.MOVABLE)
    await first.online(added[1], ZoneRequest.KERNEL)
    first.unplug(added[3], step=1)
    first.finished(0)

    second = host(path)
    second.restore()
    assert {i: (b.state, b.zone) for i, b in second.blocks.items()} == {
        i: (b.state, b.zone) for i, b in first.blocks.items()}
    assert second.blocks[added[0]].zone == "Movable" and second.blocks[added[2]].state is State.OFFLINE
    assert second.next_index == first.next_index and second.offline_count == first.offline_count == 1
    assert second.onlined_bytes == first.onlined_bytes == 2 * second.s.block_size
    assert second.resumed.done == {0} and second.resumed.progress == {0: 4, 1: 1}


@pytest.mark.asyncio
async def test_permanent_faults_survive_a_restart(tmp_path: Path) -> None:
    path = tmp_path / "state"
    first = host(path, fault_rate=1.0, fault_errnos=["EHWPOISON"])
    first.restore()
    index = first.plug(0).index
    poisoned = await first.online(index, ZoneRequest.AUTO)
    second = host(path)  # no faults configured any more: the poison is the block's own
    second.restore()
    assert (await second.online(index, ZoneRequest.AUTO)).errno == poisoned.errno != None  # noqa: E711


def test_a_torn_last_line_is_ignored(tmp_path: Path) -> None:
    path = tmp_path / "state"
    first = host(path)
    first.restore()
    index = first.plug(0).index
    with path.open("a") as fh:
        fh.write(f"o {index} Mova")  # killed in the middle of a write: no newline
    second = host(path)
    second.restore()
    assert second.blocks[index].state is State.OFFLINE
    assert path.read_text().endswith("\n")  # compacted: the torn line is gone


def test_loading_compacts_the_journal(tmp_path: Path) -> None:
    path = tmp_path / "state"
    first = host(path)
    first.restore()
    for _ in range(3):  # churn: blocks come and go; the journal grows with every change
        for index in [first.plug(0).index for _ in range(100)]:
            first.unplug(index)
    churned = path.stat().st_size
    host(path).restore()
    compacted = path.read_text().splitlines()
    assert len(compacted) == 2 + 8  # header, counters, the 8 boot blocks
    assert path.stat().st_size < churned / 10
    assert not path.with_name(path.name + ".tmp").exists()


def test_a_file_of_other_settings_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "state"
    host(path).restore()
    other = Host(parse({}), StateFile(path, "another-scenario", 128 << 20))
    with pytest.raises(BackendError, match=str(path)) as info:
        other.restore()
    assert "delete it" in str(info.value)


def test_a_corrupt_line_is_refused_with_its_number(tmp_path: Path) -> None:
    path = tmp_path / "state"
    host(path).restore()
    lines = path.read_text().splitlines()
    lines.insert(3, "o banana Normal")
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(BackendError, match="line 4"):
        host(path).restore()


@pytest.mark.asyncio
async def test_the_daemon_resumes_instead_of_replaying_the_scenario(tmp_path: Path) -> None:
    table = {**FREE, "nodes": 1, "state_file": str(tmp_path / "state"), "scenario": [{"kind": "dimm", "size": "1GiB"}]}
    first = simulated_daemon(table, settle=0.01)
    await run_to_the_end(first)
    assert first.scheduler.onlined == 8

    second = simulated_daemon(table, settle=0.01)
    await run_to_the_end(second)
    assert second.scheduler.onlined == 0  # nothing new: the DIMM was played, its blocks are online
    blocks = second.backend.host.blocks
    assert len(blocks) == 32 + 8 and all(b.state is State.ONLINE for b in blocks.values())
