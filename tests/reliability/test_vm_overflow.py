"""The storm on a real kernel: a 16 GiB DIMM and a flood of synthetic adds overflow hotplugd's netlink buffer.

``hotplugd run --backend sysfs`` runs in a QEMU guest (tests/vm/harness) with
the smallest receive buffer the plugin accepts. While it is stopped (SIGSTOP)
the guest's kernel raises 128 ``add`` uevents for the DIMM's blocks, and a
shell writes ``add`` to every block's ``uevent`` file a few times over: far
more than the buffer holds, so the kernel drops events and the next receive
fails with ENOBUFS. Once continued, hotplugd must rescan and online every block,
its peak RSS bounded.
"""

from __future__ import annotations

import signal

import pytest
from harness import GiB, Guest, GuestConfig
from harness.pytest_plugin import guest_fixture

from .metrics_file import Samples

pytestmark = [pytest.mark.vm, pytest.mark.reliability]

CONFIG = GuestConfig(memhp_default_state="offline", memory="2G", slots=2, maxmem="24G", virtio_mem=False)
DIMM = 16 * GiB
MAX_RSS = 150 << 20
#: ``add`` written to every block's uevent file this many times (boot blocks included: harmless replays).
FLOOD = """for round in 1 2 3 4; do
  for f in /sys/devices/system/memory/memory*/uevent; do echo add > "$f"; done
done"""


def vm_hwm(status: str) -> int:
    """Peak resident memory in bytes from ``/proc/<pid>/status``."""
    for line in status.splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmHWM in {status!r}")


guest = guest_fixture(CONFIG, doc=(
    "A guest of this module's own: a DIMM slot and a clean block list whatever ran before."))


def test_lost_uevents_are_recovered_by_a_rescan_on_a_real_kernel(guest: Guest) -> None:
    share = guest.guest_share
    sets = {"plugins.sysfs.rcvbuf": '"64KiB"', "metrics.enabled": "false", "scheduler.onliner": '"hotplugd"',
            "metrics.textfile": f'"{share}/overflow.prom"', "log_format": '"json"'}
    args = ["--ready-file", f"{share}/ready"] + [a for k, v in sets.items() for a in ("--set", f"{k}={v}")]
    daemon = guest.start_hotplugd(*args)
    try:
        guest.agent.wait_path(f"{share}/ready", timeout=120)
        before = {b.index for b in guest.agent.memory_blocks()}
        daemon.signal(signal.SIGSTOP)  # it reads nothing now: the kernel's events pile up in its buffer
        guest.qmp.hotplug_dimm(DIMM)
        added = guest.agent.wait_blocks(exclude=before, min_count=DIMM // GiB * 8, state="offline", timeout=120)
        guest.agent.run(["/bin/sh", "-c", FLOOD], timeout=120)
        daemon.signal(signal.SIGCONT)
        guest.agent.wait_blocks(exclude=before, min_count=len(added.blocks), state="online", timeout=300)
        peak = vm_hwm(guest.agent.read_file(f"/proc/{daemon.pid}/status"))
    finally:
        result = daemon.stop(signal.SIGTERM, timeout=60)
    assert result.returncode == 0, result.stderr[-3000:]
    m = Samples.read(guest.share / "overflow.prom")
    assert m.value("hotplugd_rescans_total", reason="overflow") >= 1
    assert m.total("hotplugd_memory_blocks", state="offline") == 0
    assert m.total("hotplugd_blocks_onlined_total") == len(added.blocks) == 128
    assert '"uevents_lost"' in result.stderr  # the backend saw ENOBUFS
    assert peak < MAX_RSS, f"peak RSS {peak >> 20} MiB"
