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


def hot_add_dimm(guest: Guest, name: str, size: int = GiB // 2) -> None:
    guest.qmp.execute("object-add", **{"qom-type": "memory-backend-ram", "id": f"{name}-mem", "size": size})
    guest.qmp.execute("device_add", driver="pc-dimm", id=name, memdev=f"{name}-mem", node=0)


def daemon_args(guest: Guest, name: str, *sets: str) -> list[str]:
    share = guest.guest_share
    args = ["--ready-file", f"{share}/{name}.ready", "--set", f'state_directory="/run/hotplugd-{name}"',
            "--set", "metrics.port=0", "--set", f'metrics.textfile="{share}/{name}.prom"',
            "--set", 'log_format="json"']
    for item in sets:
        args += ["--set", item]
    return args


def errors_in(result) -> list[dict]:
    logs = [json.loads(line) for line in (result.stdout + result.stderr).splitlines() if line.startswith("{")]
    return [e for e in logs if e.get("level") in ("error", "critical")]


def test_killed_in_kernel_mode_memory_still_onlines_and_the_next_start_counts_it(guest: Guest) -> None:
    """SIGKILL leaves the knobs as set: a DIMM added while hotplugd is down still comes online, and the next
    start finds it online (no error, nothing written)."""
    first = guest.start_hotplugd(*daemon_args(guest, "killed", 'zones.policy="movable"'))
    before = {b.index for b in guest.agent.memory_blocks()}
    try:
        guest.agent.wait_path(f"{guest.guest_share}/killed.ready", timeout=120)
        first.stop(signal.SIGKILL)
        hot_add_dimm(guest, "while-down")
        added = guest.agent.wait_blocks(exclude=before, min_count=4, state="online", timeout=60).blocks
        assert [(b.state, b.valid_zones) for b in added] == [("online", ("Movable",))] * 4
        second = guest.start_hotplugd(*daemon_args(guest, "restarted", 'zones.policy="movable"'))
        guest.agent.wait_path(f"{guest.guest_share}/restarted.ready", timeout=120)
        result = second.stop(signal.SIGTERM, timeout=30)
    finally:
        guest.agent.write_file(AUTO_ONLINE, "offline")
    assert result.returncode == 0 and errors_in(result) == []
    metrics = (guest.share / "restarted.prom").read_text()
    assert sum(metric_values(metrics, "hotplugd_blocks_onlined_total").values()) == 0
    census = metric_values(metrics, "hotplugd_memory_blocks")
    assert sum(v for k, v in census.items() if 'zone="Movable"' in k and 'state="online"' in k) >= 4


def test_blocks_the_kernel_left_offline_are_onlined_by_hotplugd(guest: Guest) -> None:
    """A DIMM added while the kernel's auto-online was off: the plan turns it on, and the blocks already
    offline, which no kernel will online, are onlined by hotplugd at once, before it says ready (no grace:
    a long one here), counted as hotplugd's."""
    guest.agent.write_file(AUTO_ONLINE, "offline")
    before = {b.index for b in guest.agent.memory_blocks()}
    hot_add_dimm(guest, "left-offline")
    offline = guest.agent.wait_blocks(exclude=before, min_count=4, state="offline", timeout=60).blocks
    daemon = guest.start_hotplugd(*daemon_args(guest, "leftover", "scheduler.kernel_grace=600",
                                               "scheduler.kernel_grace_max=600"))
    try:
        guest.agent.wait_path(f"{guest.guest_share}/leftover.ready", timeout=120)
        # online by the time it said ready: read once, not waited for
        assert not [b.index for b in guest.agent.memory_blocks() if b.index not in before and not b.online]
        assert counted(guest.share / "leftover.prom", "hotplugd_blocks_onlined_total", len(offline))
    finally:
        result = daemon.stop(signal.SIGTERM, timeout=30)
        guest.agent.write_file(AUTO_ONLINE, "offline")
    assert result.returncode == 0 and errors_in(result) == []
    metrics = (guest.share / "leftover.prom").read_text()
    assert metric_values(metrics, "hotplugd_onliner")['{domain="host",onliner="kernel"}'] == 1.0
    assert metric_values(metrics, "hotplugd_phases_total")['{trigger="kernel_off_at_start"}'] >= 1


def test_the_plan_changes_on_reload(guest: Guest) -> None:
    """movable in kernel mode, then a per-node policy on SIGHUP: the plan turns to hotplugd and the
    kernel's auto-online off; the next DIMM is onlined by hotplugd."""
    config = guest.share / "reload.toml"
    config.write_text('[zones]\npolicy = "movable"\n')
    daemon = guest.start_hotplugd("--config", f"{guest.guest_share}/reload.toml", *daemon_args(guest, "reload"))
    before = {b.index for b in guest.agent.memory_blocks()}
    try:
        guest.agent.wait_path(f"{guest.guest_share}/reload.ready", timeout=120)
        assert guest.agent.read_file(AUTO_ONLINE).strip() == "online_movable"
        config.write_text('[zones]\npolicy = "movable"\n[zones.nodes.1]\npolicy = "kernel"\n')
        daemon.signal(signal.SIGHUP)
        deadline = time.monotonic() + 30
        while guest.agent.read_file(AUTO_ONLINE).strip() != "offline" and time.monotonic() < deadline:
            time.sleep(0.1)
        assert guest.agent.read_file(AUTO_ONLINE).strip() == "offline"
        hot_add_dimm(guest, "after-reload")
        added = guest.agent.wait_blocks(exclude=before, min_count=4, state="online", timeout=60).blocks
        assert counted(guest.share / "reload.prom", "hotplugd_blocks_onlined_total", 4)
    finally:
        result = daemon.stop(signal.SIGTERM, timeout=30)
        guest.agent.write_file(AUTO_ONLINE, "offline")
    assert result.returncode == 0 and errors_in(result) == []
    assert [(b.state, b.valid_zones) for b in added] == [("online", ("Movable",))] * 4  # node 0: movable
    metrics = (guest.share / "reload.prom").read_text()
    assert metric_values(metrics, "hotplugd_onliner")['{domain="host",onliner="hotplugd"}'] == 1.0
