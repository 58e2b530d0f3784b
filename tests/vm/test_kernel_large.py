"""Kernel mode at a real host's scale: DIMMs far larger than the guest, onlined by the kernel alone.

A 48 GiB pc-dimm (384 blocks) takes the guest kernel longer to add than ``scheduler.kernel_grace``:
the kernel adds every block of a DIMM before it onlines the first, all under
``device_hotplug_lock``. hotplugd, under the default plan (zone policy ``auto``: the kernel
onlines), must wait while the kernel adds and onlines, write not one block, and count all of
them as the kernel's (``hotplugd_kernel_onlined_blocks_total``). Then two such DIMMs back to back.

The DIMMs are backed by sparse files in the guest's work dir on this machine's disk
(``memory-backend-file``, ``share=on``): onlined memory is not touched until used, so the host
needs none of it; the memmap the kernel writes (1/64 of what it adds) goes in the guest's boot
memory. One guest for the module.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from daemonctl import GuestDaemon, Metrics
from harness import GiB, Guest, GuestConfig, GuestError
from harness.pytest_plugin import guest_fixture

pytestmark = pytest.mark.vm

DIMM = 48 * GiB
BLOCKS = DIMM // (128 << 20)  # 384
#: Three 48 GiB DIMMs and their memmap (768 MiB each, 1/64): 4 GiB of boot memory holds all three, and the
#: kernel takes it from there (it puts onlined memory at the tail of its free lists). In a DIMM's file it
#: would be written through to this shared machine's disk, and the guest's vCPUs stall for seconds when
#: the host throttles those writes: a kernel "quiet" for longer than any real one ever is.
CONFIG = GuestConfig(memhp_default_state="offline", memory="4G", cpus=2, slots=8, maxmem="160G", virtio_mem=False)

guest = guest_fixture(CONFIG, doc="A guest of this module's own, booted with hot-added memory left offline.")


def hot_add_file_dimm(guest: Guest, name: str, size: int = DIMM) -> Path:
    """A pc-dimm backed by a sparse file in the guest's work dir; returns the file."""
    path = guest.workdir / f"{name}.mem"
    guest.qmp.execute("object-add", **{"qom-type": "memory-backend-file", "id": f"{name}-mem",
                                       "mem-path": str(path), "share": True, "size": size})
    guest.qmp.execute("device_add", driver="pc-dimm", id=name, memdev=f"{name}-mem", node=0)
    return path


def allocated(path: Path) -> int:
    """Bytes the file really holds on disk (``du``), not its apparent size."""
    return os.stat(path).st_blocks * 512


def counted(daemon: GuestDaemon, count: int, timeout: float) -> None:
    """Wait (at most ``timeout``) until hotplugd has read back ``count`` blocks the kernel onlined, or written some."""
    def done(m: Metrics) -> bool:
        return m.total("hotplugd_kernel_onlined_blocks_total") + m.total("hotplugd_blocks_onlined_total") >= count
    try:
        daemon.wait_metrics(done, timeout=timeout)
    except GuestError:
        pass  # the assertions say what it counted


def figures(metrics: Metrics) -> str:
    """What hotplugd did, for the test's output: blocks it wrote, found online, counted as the kernel's."""
    return (f"kernel onlined (read back) {metrics.total('hotplugd_kernel_onlined_blocks_total'):.0f}, "
            f"written by hotplugd {metrics.total('hotplugd_online_call_seconds_count'):.0f} "
            f"(onlined {metrics.total('hotplugd_blocks_onlined_total'):.0f}, found online "
            f"{metrics.total('hotplugd_online_outcomes_total', outcome='already_online'):.0f}), "
            f"phases {metrics.total('hotplugd_phases_total'):.0f}")


def assert_none_written(daemon: GuestDaemon, metrics: Metrics, count: int) -> None:
    print(f"\n{count} blocks: {figures(metrics)}")
    for event in daemon.logs():
        if event.get("event") in ("kernel_takeover", "phase_finished", "uevents_lost", "blocks_not_registered"):
            print(event)
    assert metrics.total("hotplugd_kernel_onlined_blocks_total") == count
    assert metrics.total("hotplugd_blocks_onlined_total") == 0
    assert metrics.total("hotplugd_online_call_seconds_count") == 0  # not one write to a block's state
    assert metrics.total("hotplugd_phases_total") == 0
    assert metrics.total("hotplugd_online_outcomes_total", outcome="onlined") == count
    logs = daemon.logs()
    assert [e for e in logs if e.get("level") in ("error", "critical")] == []
    assert [e for e in logs if e.get("event") in ("phase_finished", "kernel_takeover")] == []


def test_a_48_gib_dimm_is_onlined_by_the_kernel_alone(guest: Guest) -> None:
    before = {b.index for b in guest.agent.memory_blocks()}
    daemon = GuestDaemon.start(guest, "--set", 'log_format="json"')
    try:
        backing = hot_add_file_dimm(guest, "big")
        added = guest.agent.wait_blocks(exclude=before, min_count=BLOCKS, state="online", timeout=600,
                                        interval=0.5).blocks
        counted(daemon, BLOCKS, timeout=60)
    finally:
        daemon.stop(timeout=60)
    metrics = daemon.metrics()
    assert len(added) == BLOCKS and all(b.online for b in added)
    assert_none_written(daemon, metrics, BLOCKS)
    used = allocated(backing)
    print(f"\n48 GiB DIMM: its sparse file holds {used / 2**20:.0f} MiB on disk")
    assert used < 4 * GiB  # untouched memory is not backed


def test_two_48_gib_dimms_back_to_back_are_onlined_by_the_kernel_alone(guest: Guest) -> None:
    before = {b.index for b in guest.agent.memory_blocks()}
    daemon = GuestDaemon.start(guest, "--set", 'log_format="json"')
    try:
        backings = [hot_add_file_dimm(guest, "first"), hot_add_file_dimm(guest, "second")]
        added = guest.agent.wait_blocks(exclude=before, min_count=2 * BLOCKS, state="online", timeout=900,
                                        interval=0.5).blocks
        counted(daemon, 2 * BLOCKS, timeout=60)
    finally:
        daemon.stop(timeout=60)
    metrics = daemon.metrics()
    assert len(added) == 2 * BLOCKS and all(b.online for b in added)
    assert_none_written(daemon, metrics, 2 * BLOCKS)
    used = [allocated(p) for p in backings]
    print(f"\ntwo 48 GiB DIMMs: their sparse files hold {', '.join(f'{u / 2**20:.0f} MiB' for u in used)} on disk")
    assert all(u < 4 * GiB for u in used)
