"""DAX devices on a real kernel (issue 19): NVDIMMs on a memory-only node 1 made devdax with ndctl.

One guest for the module (``docs/facts/DAX.md``): four 2 GiB NVDIMMs on node 1, so four devdax
devices (``daxN.0``, 15 blocks of 128 MiB each once kmem takes one), one per scenario, and a
DIMM slot for node 0. The daemon runs with the default zone policy (``auto``) and ``[zones.dax]``
at its default (``movable``) unless a scenario says otherwise:

- started first, then ``dax0.0`` created: hotplugd converts it (it is named) and onlines its
  15 blocks Movable on node 1; ``dax1.0`` created next is not named and stays devdax; a DIMM
  hot-added to node 0 then follows the ``auto`` policy (Normal);
- started again naming ``dax1.0`` by its namespace UUID while it exists (coldplug): converted
  at start, its 15 blocks Movable on node 1;
- the kernel's auto-online on (``online``, contig-zones: it would put dax memory in Normal) and
  one policy for all (``movable``): the plan has the kernel online (``online_movable``), and
  hotplugd proves each of ``dax2.0``'s blocks Movable;
- killed at the first online of ``dax3.0``'s blocks, then started again: every block online
  Movable, none onlined twice, the device not converted twice.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from daemonctl import GuestDaemon
from harness import GiB, Guest, GuestConfig
from harness.assets import Assets
from harness.nvdimm import DaxTools, nvdimm_args
from harness.pytest_plugin import boot, provisioned
from onlinetime import kill_on_online

pytestmark = pytest.mark.vm

DAX_BLOCKS = 15  # 2,111,832,064 bytes of a 2 GiB NVDIMM's devdax namespace, aligned to 128 MiB blocks
TIMEOUT = 120


@pytest.fixture(scope="module")
def dax_guest(vm_assets: Assets, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Guest, DaxTools]]:
    tools = provisioned(DaxTools.find, vm_assets.project)
    backing = tmp_path_factory.mktemp("nvdimm")
    config = GuestConfig(memhp_default_state="offline", memory="2G", cpus=2, slots=6, maxmem="12G", virtio_mem=False,
                         qemu_args=nvdimm_args([backing / f"nv{i}" for i in range(1, 5)]))
    guest = boot(config, vm_assets)
    try:
        tools.load_modules(guest)
        yield guest, tools
    finally:
        guest.close()


def driver(guest: Guest, device: str) -> str:
    """The driver ``device`` is bound to in the guest ("" when unbound)."""
    r = guest.agent.run(["readlink", f"/sys/bus/dax/devices/{device}/driver"], check=False)
    return Path(r.stdout.strip()).name


def devdax(guest: Guest, tools: DaxTools, namespace: str, device: str) -> None:
    """``device`` in devdax mode, made from ``namespace`` unless an earlier test did."""
    if not driver(guest, device):
        made = tools.devdax(guest, namespace)
        assert made["daxregion"]["devices"][0]["chardev"] == device, made
    assert driver(guest, device) == "device_dax"


def start(guest: Guest, rule: str, *extra: str) -> GuestDaemon:
    return GuestDaemon.start(guest, "--set", f"plugins.sysfs.dax=[{rule}]", "--set", 'log_format="json"', *extra)


def errors(daemon: GuestDaemon) -> list[dict[str, object]]:
    return [e for e in daemon.logs() if e.get("level") in ("error", "critical")]


def test_a_named_device_created_after_start_is_onlined_movable_on_its_node(dax_guest: tuple[Guest, DaxTools]) -> None:
    guest, tools = dax_guest
    before = {b.index for b in guest.agent.memory_blocks()}
    daemon = start(guest, '{device="dax0.0"}')
    try:
        devdax_made = tools.devdax(guest, "namespace0.0")
        assert devdax_made["daxregion"]["devices"][0]["chardev"] == "dax0.0"
        dax0 = guest.agent.wait_blocks(exclude=before, min_count=DAX_BLOCKS, state="online", timeout=TIMEOUT).blocks
        assert driver(guest, "dax0.0") == "kmem"

        devdax(guest, tools, "namespace1.0", "dax1.0")  # not named: hotplugd must leave it alone
        seen = before | {b.index for b in dax0}
        guest.qmp.execute("object-add", **{"qom-type": "memory-backend-ram", "id": "dimm0-mem", "size": GiB // 2})
        guest.qmp.execute("device_add", driver="pc-dimm", id="dimm0", memdev="dimm0-mem", node=0)
        dimm = guest.agent.wait_blocks(exclude=seen, min_count=4, state="online", timeout=TIMEOUT).blocks
        # the DIMM's blocks came after dax1.0's bind uevent: hotplugd has judged dax1.0 by now
        assert driver(guest, "dax1.0") == "device_dax"
    finally:
        daemon.stop()

    assert [(b.node, b.state, b.valid_zones) for b in dax0] == [(1, "online", ("Movable",))] * DAX_BLOCKS
    assert [(b.node, b.valid_zones) for b in dimm] == [(0, ("Normal",))] * 4  # zones.policy auto: its own
    m = daemon.metrics()
    assert m.total("hotplugd_device_memory_blocks", device="dax0.0", zone="Movable", state="online") == DAX_BLOCKS
    assert m.total("hotplugd_blocks_onlined_total", zone="Movable") == DAX_BLOCKS
    assert m.total("hotplugd_blocks_onlined_total", zone="Normal") == 4
    assert [e for e in daemon.logs() if e.get("event") == "dax_converted"][0]["device"] == "dax0.0"
    assert errors(daemon) == []


def test_a_named_device_present_at_start_is_converted_by_the_start_scan(dax_guest: tuple[Guest, DaxTools]) -> None:
    guest, tools = dax_guest
    devdax(guest, tools, "namespace1.0", "dax1.0")
    uuid = guest.agent.read_file("/sys/bus/dax/devices/dax1.0/../uuid").strip()  # what ndctl list shows
    listed = json.loads(tools.run(guest, tools.ndctl, "list", "-n", "namespace1.0").stdout)
    assert (listed[0] if isinstance(listed, list) else listed)["uuid"] == uuid
    before = {b.index for b in guest.agent.memory_blocks()}
    daemon = start(guest, f'{{match={{uuid="{uuid}"}}}}')
    try:
        blocks = guest.agent.wait_blocks(exclude=before, min_count=DAX_BLOCKS, state="online", timeout=TIMEOUT).blocks
    finally:
        daemon.stop()
    assert driver(guest, "dax1.0") == "kmem"
    assert [(b.node, b.valid_zones) for b in blocks] == [(1, ("Movable",))] * DAX_BLOCKS
    m = daemon.metrics()
    assert m.total("hotplugd_rescans_total", reason="start") == 1
    # converted by the start scan, which sees the blocks; their add uevents come too: each onlined once
    assert m.total("hotplugd_blocks_onlined_total", zone="Movable") == DAX_BLOCKS
    assert m.total("hotplugd_blocks_onlined_total") == DAX_BLOCKS
    assert m.total("hotplugd_device_memory_blocks", device="dax1.0", zone="Movable") == DAX_BLOCKS
    assert errors(daemon) == []


def test_the_kernels_auto_online_carries_one_policy_for_all_and_hotplugd_proves_it(
        dax_guest: tuple[Guest, DaxTools]) -> None:
    guest, tools = dax_guest
    guest.agent.write_file("/sys/devices/system/memory/auto_online_blocks", "online")  # contig-zones: Normal
    before = {b.index for b in guest.agent.memory_blocks()}
    daemon = start(guest, '{device="dax2.0"}', "--set", 'zones.policy="movable"')
    try:
        assert guest.agent.read_file("/sys/devices/system/memory/auto_online_blocks").strip() == "online_movable"
        tools.devdax(guest, "namespace2.0")
        blocks = guest.agent.wait_blocks(exclude=before, min_count=DAX_BLOCKS, state="online", timeout=TIMEOUT).blocks
        m = daemon.wait_metrics(lambda m: m.total("hotplugd_kernel_onlined_blocks_total") == DAX_BLOCKS,
                                what="the kernel's onlines of dax2.0 verified")
    finally:
        daemon.stop()
        guest.agent.write_file("/sys/devices/system/memory/auto_online_blocks", "offline")
    assert driver(guest, "dax2.0") == "kmem"
    assert [(b.node, b.valid_zones) for b in blocks] == [(1, ("Movable",))] * DAX_BLOCKS
    assert m.total("hotplugd_kernel_onlined_blocks_total", zone="Movable") == DAX_BLOCKS
    assert m.total("hotplugd_zone_mismatches_total") == 0
    assert m.total("hotplugd_onliner", onliner="kernel") == 1
    assert errors(daemon) == []


def test_killed_while_onlining_a_converted_device_and_restarted(dax_guest: tuple[Guest, DaxTools]) -> None:
    guest, tools = dax_guest
    before = {b.index for b in guest.agent.memory_blocks()}
    first = start(guest, '{device="dax3.0"}')
    killer = kill_on_online(guest, pid=first.proc.pid)
    tools.devdax(guest, "namespace3.0")
    assert killer.wait(TIMEOUT).returncode == 0
    first.kill()
    assert driver(guest, "dax3.0") == "kmem"  # converted before the kill: it stays so
    new = [b for b in guest.agent.memory_blocks() if b.index not in before]
    left = sum(not b.online for b in new)

    second = start(guest, '{device="dax3.0"}')
    try:
        blocks = guest.agent.wait_blocks(exclude=before, min_count=DAX_BLOCKS, state="online", timeout=TIMEOUT).blocks
    finally:
        second.stop()
    assert len(new) == DAX_BLOCKS  # every block was added before the kill (kmem adds them in its probe)
    assert [(b.node, b.valid_zones) for b in blocks] == [(1, ("Movable",))] * DAX_BLOCKS
    m = second.metrics()
    assert m.total("hotplugd_blocks_onlined_total") == left  # only what the first left, each once
    assert [e for e in second.logs() if e.get("event") == "dax_converted"] == []  # not converted twice
    assert errors(second) == []
