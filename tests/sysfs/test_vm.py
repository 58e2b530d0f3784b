"""The sysfs backend against a real kernel: a QEMU guest (tests/vm/harness) with two NUMA nodes.

``hotplugd run --backend sysfs`` runs in the guest (never on this machine's
own /sys); memory is hot-added over QMP as pc-dimms and virtio-mem on both
nodes. While blocks are in flight the test reads only ``state`` files: a
block's ``valid_zones`` must not be read before the kernel links it to its
node (6.1 oopses on ``NODE_DATA(NUMA_NO_NODE)``), which is the very race the
backend must survive.
"""

from __future__ import annotations

import json
import signal

import pytest
from harness import GiB, Guest, GuestConfig
from harness.pytest_plugin import guest_fixture

pytestmark = pytest.mark.vm

NUMA = ("-object", "memory-backend-ram,id=ram0,size=1G", "-numa", "node,nodeid=0,cpus=0,memdev=ram0",
        "-object", "memory-backend-ram,id=ram1,size=1G", "-numa", "node,nodeid=1,cpus=1,memdev=ram1",
        "-object", "memory-backend-ram,id=vmem1,size=4G",
        "-device", "virtio-mem-pci,id=vm1,memdev=vmem1,node=1,requested-size=0")
CONFIG = GuestConfig(memhp_default_state="offline", memory="2G", cpus=2, slots=8, maxmem="32G",
                     virtio_mem=False, qemu_args=NUMA)
#: Waits in the guest for blocks to be online, reading only ``state`` (never ``valid_zones``).
WAIT_ONLINE = """
want=$1; shift; n=0
while [ $n -lt 1200 ]; do
  ok=0
  for i in "$@"; do
    [ "$(cat /sys/devices/system/memory/memory$i/state 2>/dev/null)" = online ] && ok=$((ok+1))
  done
  [ $ok -ge $want ] && exit 0
  n=$((n+1)); sleep 0.05
done
exit 1
"""


guest = guest_fixture(CONFIG, doc="A guest of this module's own: two NUMA nodes, a virtio-mem device on node 1.")


def present(guest: Guest) -> set[int]:
    out = guest.agent.run(["/bin/sh", "-c", "ls /sys/devices/system/memory | sed -n 's/^memory//p'"]).stdout
    return {int(i) for i in out.split()}


def hot_add_dimm(guest: Guest, size: int, node: int, name: str) -> None:
    guest.qmp.execute("object-add", **{"qom-type": "memory-backend-ram", "id": f"{name}-mem", "size": size})
    guest.qmp.execute("device_add", driver="pc-dimm", id=name, memdev=f"{name}-mem", node=node)


def wait_new_blocks(guest: Guest, before: set[int], count: int, timeout: float = 60) -> list[int]:
    """The indices of ``count`` new blocks, once they exist (their directories only)."""
    script = f"""n=0; while [ $n -lt {int(timeout * 20)} ]; do
      c=$(ls /sys/devices/system/memory | grep -c '^memory'); [ $c -ge {len(before) + count} ] && exit 0
      n=$((n+1)); sleep 0.05; done; exit 1"""
    guest.agent.run(["/bin/sh", "-c", script], timeout=timeout + 10)
    return sorted(present(guest) - before)


def wait_online(guest: Guest, indices: list[int]) -> None:
    result = guest.agent.run(["/bin/sh", "-c", WAIT_ONLINE, "wait", str(len(indices)), *map(str, indices)],
                             timeout=90, check=False)
    assert result.returncode == 0, f"blocks {indices} not all online within 60 s"


def block(guest: Guest, index: int) -> tuple[str, str, int | None]:
    base = f"/sys/devices/system/memory/memory{index}"
    out = guest.agent.run(["/bin/sh", "-c", f"cat {base}/state {base}/valid_zones; ls {base}"]).stdout.split()
    node = next((int(n[4:]) for n in out[2:] if n.startswith("node") and n[4:].isdigit()), None)
    return out[0], out[1], node


def test_hotplugd_onlines_dimms_and_virtio_mem_on_both_nodes(guest: Guest) -> None:
    before = present(guest)
    hot_add_dimm(guest, GiB, node=1, name="cold")  # before the daemon: coldplug
    cold = wait_new_blocks(guest, before, 8)

    share = guest.guest_share
    daemon = guest.start_hotplugd(
        "--ready-file", f"{share}/ready", "--set", 'zones.policy="movable"', "--set", 'scheduler.onliner="hotplugd"',
        "--set", "metrics.port=0",
        "--set", f'metrics.textfile="{share}/metrics.prom"', "--set", 'log_format="json"')
    try:
        guest.agent.wait_path(f"{share}/ready", timeout=120)
        wait_online(guest, cold)

        seen = present(guest)
        hot_add_dimm(guest, 2 * GiB, node=0, name="hot")
        hot = wait_new_blocks(guest, seen, 16)
        wait_online(guest, hot)

        seen = present(guest)
        guest.qmp.resize_virtio_mem(GiB, device="vm1")
        grown = wait_new_blocks(guest, seen, 8)
        wait_online(guest, grown)

        # a synthetic replay (udevadm trigger) of an online block changes nothing
        guest.agent.run(["/bin/sh", "-c", f"echo add > /sys/devices/system/memory/memory{hot[0]}/uevent"])
        conflicts = guest.agent.run([str(guest.hotplugd_path()), "check", "--backend", "sysfs"],
                                    check=False, timeout=120)
    finally:
        result = daemon.stop(signal.SIGTERM, timeout=30)
    assert result.returncode == 0, result.stderr[-3000:]
    assert conflicts.returncode == 0 and "no conflicts" in conflicts.stdout and "backend sysfs" in conflicts.stdout

    nodes = {i: block(guest, i) for i in [*cold, *hot, *grown]}
    assert all(state == "online" and zone == "Movable" for state, zone, _ in nodes.values())
    assert {nodes[i][2] for i in cold} == {1} and {nodes[i][2] for i in hot} == {0}
    assert {nodes[i][2] for i in grown} == {1}

    logs = [json.loads(line) for line in result.stdout.splitlines() + result.stderr.splitlines()
            if line.startswith("{")]
    failures = [e for e in logs if e.get("event") in ("online_failed", "backend_online_failed", "hook_failed")]
    assert failures == []
    # One line per hot-add once it has settled (the DIMM, the virtio-mem growth: more than one if it paused).
    settled = [e for e in logs if e.get("event") == "hotadd_settled"]
    assert sum(e["online"] for e in settled) == len(hot) + len(grown), settled
    assert all(e["summary"].endswith(", by hotplugd, all proven") for e in settled), settled
    metrics = (guest.share / "metrics.prom").read_text()
    onlined = sum(float(line.split()[-1]) for line in metrics.splitlines()
                  if line.startswith("hotplugd_blocks_onlined_total{"))
    assert onlined == len(cold) + len(hot) + len(grown)
    dropped = [line for line in metrics.splitlines() if line.startswith("hotplugd_uevents_dropped_total{")]
    assert all(float(line.split()[-1]) == 0 for line in dropped)

    dmesg = guest.agent.run(["dmesg"]).stdout
    assert "BUG:" not in dmesg and "Oops" not in dmesg


def test_check_never_says_to_turn_the_kernels_onlining_off(guest: Guest) -> None:
    """The kernel onlining by itself is the plan's to judge (hotplugd sets the knobs), not a conflict."""
    auto = "/sys/devices/system/memory/auto_online_blocks"
    guest.agent.write_file(auto, "online_movable")  # the guest's own sysfs
    try:
        result = guest.agent.run([str(guest.hotplugd_path()), "check", "--backend", "sysfs"], check=False, timeout=120)
    finally:
        guest.agent.write_file(auto, "offline")
    assert result.returncode in (0, 1), result.stderr
    assert "write 'offline'" not in result.stdout and "memhp_default_state=offline" not in result.stdout
    assert "onlines hot-added memory itself" not in result.stdout


def test_per_node_policies_fall_back_to_hotplugd_and_both_nodes_get_their_zone(guest: Guest) -> None:
    """A two-node guest, node 0 kernel and node 1 movable: the kernel's global knobs cannot carry it, so
    the plan is hotplugd's own onlining (the kernel's auto-online kept off), and each node's DIMM
    ends in its own zone."""
    share = guest.guest_share
    daemon = guest.start_hotplugd(
        "--ready-file", f"{share}/per-node.ready", "--set", 'zones.policy="kernel"',
        "--set", 'zones.nodes.1.policy="movable"', "--set", "metrics.port=0",
        "--set", f'metrics.textfile="{share}/per-node.prom"', "--set", 'log_format="json"')
    try:
        guest.agent.wait_path(f"{share}/per-node.ready", timeout=120)
        auto_online = guest.agent.read_file("/sys/devices/system/memory/auto_online_blocks").strip()
        seen = present(guest)
        hot_add_dimm(guest, GiB // 2, node=0, name="pn0")
        on0 = wait_new_blocks(guest, seen, 4)
        seen = present(guest)
        hot_add_dimm(guest, GiB // 2, node=1, name="pn1")
        on1 = wait_new_blocks(guest, seen, 4)
        wait_online(guest, on0 + on1)
    finally:
        result = daemon.stop(signal.SIGTERM, timeout=30)
    assert result.returncode == 0, result.stderr[-3000:]
    assert auto_online == "offline"
    assert [block(guest, i) for i in on0] == [("online", "Normal", 0)] * 4
    assert [block(guest, i) for i in on1] == [("online", "Movable", 1)] * 4
    metrics = (guest.share / "per-node.prom").read_text()
    assert 'hotplugd_onliner{domain="host",onliner="hotplugd"} 1.0' in metrics
    onlined = sum(float(line.split()[-1]) for line in metrics.splitlines()
                  if line.startswith("hotplugd_blocks_onlined_total{"))
    assert onlined == 8
