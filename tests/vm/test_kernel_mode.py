"""Kernel mode on the real guest kernel: hotplugd sets the knobs, the kernel onlines, hotplugd proves each block.

For each zone policy the daemon runs with ``scheduler.onliner = "kernel"`` (it refuses
to start, exit 78, where the kernel's knobs cannot carry the policy: that it runs at
all says the plan chose the kernel), a DIMM is hot-added over QMP, and the blocks must
come online in the zone the policy promises, read back from the guest's sysfs, with
hotplugd's metrics counting each one as the kernel's and none in the wrong zone.

One guest for the module: the policies run in an order whose zones do not depend on
each other (contig-zones picks Normal for a DIMM beyond every zone's span; the
auto-movable DIMM is the first Movable memory). Mainline's ``auto-movable`` judges a
DIMM as a whole (ACPI registers each as a static memory group): all of it Movable
while it fits within the ratio of the node's boot-time kernel memory, else all of it
in the kernel zone.
"""

from __future__ import annotations

import json
import signal
import time
from pathlib import Path

import pytest
from harness import GiB, Guest, GuestConfig
from harness.pytest_plugin import guest_fixture

pytestmark = pytest.mark.vm

CONFIG = GuestConfig(memhp_default_state="offline", memory="2G", cpus=2, slots=8, maxmem="32G", virtio_mem=False)
AUTO_ONLINE = "/sys/devices/system/memory/auto_online_blocks"
ONLINE_POLICY = "/sys/module/memory_hotplug/parameters/online_policy"

guest = guest_fixture(CONFIG, doc="A guest of this module's own, booted with hot-added memory left offline.")

#: (policy, extra --set, what auto_online_blocks must read, the zone of every block of a 512 MiB DIMM)
CASES = [
    ("kernel", (), "online_kernel", "Normal"),
    ("auto", (), "online", "Normal"),  # contig-zones: the kernel zone for a DIMM beyond every zone
    ("auto-movable", ("zones.auto_movable_ratio=301",), "online", "Movable"),  # 512 MiB << 301 % of 2 GiB
    ("movable", (), "online_movable", "Movable"),
]


def counted(path: Path, name: str, count: int, timeout: float = 60) -> bool:
    """Wait until the textfile's ``name`` samples add up to ``count`` (hotplugd reads each block back)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists() and sum(metric_values(path.read_text(), name).values()) >= count:
            return True
        time.sleep(0.1)
    return False


def metric_values(text: str, name: str) -> dict[str, float]:
    """``name{labels} value`` lines of a textfile: labels text -> value."""
    found = {}
    for line in text.splitlines():
        if line.startswith(name + "{") or line.startswith(name + " "):
            head, _, value = line.rpartition(" ")
            found[head[len(name):]] = float(value)
    return found


@pytest.mark.parametrize(("policy", "extra", "auto_online", "zone"), CASES, ids=[c[0] for c in CASES])
def test_the_kernel_onlines_into_the_promised_zone_and_hotplugd_counts_it(guest: Guest, policy: str,
                                                                          extra: tuple[str, ...], auto_online: str,
                                                                          zone: str) -> None:
    share = guest.guest_share
    sets = ["--set", f'zones.policy="{policy}"', "--set", 'scheduler.onliner="kernel"',
            "--set", f'state_directory="/run/hotplugd-{policy}"', "--set", "metrics.port=0",
            "--set", f'metrics.textfile="{share}/{policy}.prom"', "--set", 'log_format="json"']
    for item in extra:
        sets += ["--set", item]
    daemon = guest.start_hotplugd("--ready-file", f"{share}/{policy}.ready", *sets)
    before = {b.index for b in guest.agent.memory_blocks()}
    try:
        guest.agent.wait_path(f"{share}/{policy}.ready", timeout=120)
        assert guest.agent.read_file(AUTO_ONLINE).strip() == auto_online
        guest.qmp.execute("object-add", **{"qom-type": "memory-backend-ram", "id": f"{policy}-mem",
                                           "size": GiB // 2})
        guest.qmp.execute("device_add", driver="pc-dimm", id=policy, memdev=f"{policy}-mem", node=0)
        added = guest.agent.wait_blocks(exclude=before, min_count=4, state="online", timeout=60).blocks
        assert counted(guest.share / f"{policy}.prom", "hotplugd_kernel_onlined_blocks_total", 4)
    finally:
        result = daemon.stop(signal.SIGTERM, timeout=30)
        knobs_after = guest.agent.read_file(AUTO_ONLINE).strip()
        guest.agent.write_file(AUTO_ONLINE, "offline")  # the next case starts from a kernel that leaves blocks
        guest.agent.write_file(ONLINE_POLICY, "contig-zones")
    assert result.returncode == 0, result.stderr[-3000:]
    assert knobs_after == auto_online  # stopping leaves the knobs as set: memory still onlines meanwhile

    assert [(b.state, b.valid_zones, b.node) for b in added] == [("online", (zone,), 0)] * 4

    logs = [json.loads(line) for line in (result.stdout + result.stderr).splitlines() if line.startswith("{")]
    assert [e for e in logs if e.get("level") in ("error", "critical")] == []
    metrics = (guest.share / f"{policy}.prom").read_text()
    assert metric_values(metrics, "hotplugd_onliner") == {'{domain="host",onliner="hotplugd"}': 0.0,
                                                          '{domain="host",onliner="kernel"}': 1.0}
    assert sum(metric_values(metrics, "hotplugd_kernel_onlined_blocks_total").values()) == 4
    assert metric_values(metrics, "hotplugd_kernel_onlined_blocks_total") == {
        f'{{domain="host",node="0",zone="{zone}"}}': 4.0}
    assert sum(metric_values(metrics, "hotplugd_blocks_onlined_total").values()) == 0  # none written by hotplugd
    assert sum(metric_values(metrics, "hotplugd_zone_mismatches_total").values()) == 0
