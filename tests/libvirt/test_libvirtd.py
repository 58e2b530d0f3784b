"""The libvirt backend against a real libvirtd (a private one) and two TCG domains booting the guest harness.

One libvirtd and two domains (``vm-a`` and ``vm-b``, 2 vCPUs, 2 GiB, a 4 GiB
virtio-mem device, ``memhp_default_state=offline``, qemu-ga started by the
harness) serve every scenario, in order; ``hotplugd run --backend libvirt`` runs
on this machine against the private URI, its metrics on loopback. The guests
are read through the harness's control port, never through their agent, so
only hotplugd ever sends the agent a command.
"""

from __future__ import annotations

import contextlib
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from domains import METADATA_URI
from harness.pytest_plugin import provisioned
from libvirt_env import GiB, HostHotplugd, LibvirtGuest, PrivateLibvirtd, boot_all, free_port, require_libvirt

pytestmark = [pytest.mark.vm]

BLOCK = 128 << 20
FAST = {"resize_quiet": "1s", "reconnect_interval": "0.2s", "reconnect_max": "2s", "timeout": "3s"}


def offline(blocks: dict[int, bool]) -> set[int]:
    return {i for i, online in blocks.items() if not online}


@pytest.fixture(scope="module")
def libvirtd(vm_assets: Any) -> Iterator[PrivateLibvirtd]:
    provisioned(require_libvirt)
    with PrivateLibvirtd() as daemon:
        yield daemon


@pytest.fixture(scope="module")
def domains(libvirtd: PrivateLibvirtd, vm_assets: Any) -> Iterator[dict[str, LibvirtGuest]]:
    guests = {name: LibvirtGuest(libvirtd, name, vm_assets, virtio_mem=4 * GiB, metadata="yes")
              for name in ("vm-a", "vm-b")}
    try:
        t0 = time.monotonic()
        boot_all(list(guests.values()))
        print(f"\ntwo domains booted, qemu-ga connected, in {time.monotonic() - t0:.1f} s")
        yield guests
    finally:
        for g in guests.values():
            g.close()


@contextlib.contextmanager
def hotplugd(libvirtd: PrivateLibvirtd, tmp_path: Path, **settings: Any) -> Iterator[HostHotplugd]:
    daemon = HostHotplugd(libvirtd.uri, tmp_path / "hotplugd", {**FAST, **settings}, port=free_port())
    try:
        yield daemon.wait_ready()
        assert daemon.alive(), daemon.log.read_text()[-4000:]
    finally:
        code = daemon.stop()
        errors = [e for e in daemon.events() if e.get("level") in ("error", "critical")]
        assert code == 0 and not errors, (code, errors, daemon.log.read_text()[-4000:])


def test_a_dimm_comes_online_counted_under_its_domain_and_an_unselected_domain_is_never_touched(
        libvirtd: PrivateLibvirtd, domains: dict[str, LibvirtGuest], tmp_path: Path) -> None:
    a, b = domains["vm-a"], domains["vm-b"]
    before_a, before_b = a.blocks(), b.blocks()
    with hotplugd(libvirtd, tmp_path, domains=["vm-a"]) as daemon:
        a.attach_dimm(1 * GiB)
        b.attach_dimm(1 * GiB)  # vm-b is not selected
        after = a.wait_blocks(lambda bl: len(bl) >= len(before_a) + 8 and not offline(bl), "the DIMM online")
        assert len(after) - len(before_a) == 8
        b.wait_blocks(lambda bl: len(bl) >= len(before_b) + 8, "vm-b's DIMM blocks")
        deadline = time.monotonic() + 10
        while daemon.onlined() != {"vm-a": 8} and time.monotonic() < deadline:
            time.sleep(0.2)
        assert daemon.onlined() == {"vm-a": 8}
        time.sleep(2)  # give hotplugd every chance to touch vm-b
        assert len(offline(b.blocks())) == 8
    assert "custom-ga-command" in libvirtd.domain_log("vm-a")
    assert "custom-ga-command" not in libvirtd.domain_log("vm-b")  # no agent command ever reached it
    managed = [e["domain"] for e in daemon.events("libvirt_domain_managed")]
    assert managed == ["vm-a"]


def test_selected_by_metadata_coldplug_virtio_mem_in_full_and_two_domains_at_once(
        libvirtd: PrivateLibvirtd, domains: dict[str, LibvirtGuest], tmp_path: Path) -> None:
    a, b = domains["vm-a"], domains["vm-b"]
    with hotplugd(libvirtd, tmp_path, metadata=METADATA_URI) as daemon:  # both carry <hotplugd:select>yes
        assert sorted(e["domain"] for e in daemon.events("libvirt_domain_managed")) == ["vm-a", "vm-b"]
        # vm-b's DIMM, left offline by the first scenario, is found at start (coldplug)
        b.wait_blocks(lambda bl: not offline(bl), "vm-b's earlier DIMM online (coldplug)")
        before = len(a.blocks())
        libvirtd.virsh("update-memory-device", "vm-a", "--alias", "virtiomem0", "--requested-size", "1GiB")
        a.wait_blocks(lambda bl: len(bl) >= before + 8 and not offline(bl), "virtio-mem's 1 GiB online")
        assert len(a.blocks()) - before == 8  # in full: 1 GiB of 128 MiB blocks
        # two domains hot-added at once
        sizes = {g.name: len(g.blocks()) for g in (a, b)}
        a.attach_dimm(1 * GiB)
        b.attach_dimm(1 * GiB)
        for g in (a, b):
            g.wait_blocks(lambda bl, g=g: len(bl) >= sizes[g.name] + 8 and not offline(bl), "the DIMM online")
        phases = [e for e in daemon.events("phase_finished") if e["failed"] == 0]
        assert {p["domain"] for p in phases} >= {"vm-a", "vm-b"}
        ends = {p["domain"]: p for p in phases[-2:]}
        if len(ends) == 2:  # the last phase of each: did they overlap? (reported, not asserted: timing)
            print(f"\nlast phases: {[(p['domain'], p['timestamp'], p['seconds']) for p in phases[-2:]]}")


def test_faults_a_silent_agent_a_libvirtd_restart_and_a_destroyed_domain(
        libvirtd: PrivateLibvirtd, domains: dict[str, LibvirtGuest], tmp_path: Path) -> None:
    a, b = domains["vm-a"], domains["vm-b"]
    with hotplugd(libvirtd, tmp_path, domains=["vm-*"]) as daemon:
        # 1. vm-b's agent never answers (stopped): vm-a's memory is onlined meanwhile, vm-b's once it answers
        b.signal_qga(signal.SIGSTOP)
        sizes = {g.name: len(g.blocks()) for g in (a, b)}
        b.attach_dimm(1 * GiB)
        a.attach_dimm(1 * GiB)
        a.wait_blocks(lambda bl: len(bl) >= sizes["vm-a"] + 8 and not offline(bl), "vm-a's beside a silent agent")
        assert len(offline(b.blocks())) == 8
        # the silent agent is noticed (its request times out: plugins.libvirt.timeout, 5 s by default),
        # however fast vm-a's DIMM went online beside it
        deadline = time.monotonic() + 60
        while not daemon.events("libvirt_agent_down"):
            assert time.monotonic() < deadline, "vm-b's silent agent not noticed within 60 s"
            time.sleep(0.5)
        b.signal_qga(signal.SIGCONT)
        b.wait_blocks(lambda bl: not offline(bl), "vm-b online once its agent answers", timeout=60)

        # 2. libvirtd restarted in the middle of onlining vm-a's 16 GiB (128 blocks: one guest-set-memory-blocks
        #    of about a second under TCG, in flight when its first block reads online)
        size = len(a.blocks())
        a.attach_dimm(16 * GiB)
        mid = a.wait_blocks(lambda bl: len(bl) > size and len(bl) - len(offline(bl)) > size, "the first block online")
        libvirtd.restart()
        print(f"\nlibvirtd restarted with {len(offline(mid))} of vm-a's new blocks still offline")
        a.wait_blocks(lambda bl: len(bl) >= size + 128 and not offline(bl), "every block online after the restart")
        assert daemon.events("libvirt_connection_lost") and daemon.events("libvirt_reconnected")

        # 3. vm-b destroyed in the middle of onlining its 16 GiB: hotplugd goes on, vm-a still served
        size_b = len(b.blocks())
        b.attach_dimm(16 * GiB)
        mid = b.wait_blocks(lambda bl: len(bl) > size_b and len(bl) - len(offline(bl)) > size_b, "vm-b's first block")
        b.destroy()
        print(f"vm-b destroyed with {len(offline(mid))} of its new blocks still offline")
        deadline = time.monotonic() + 30
        while not daemon.events("libvirt_domain_gone") and time.monotonic() < deadline:
            time.sleep(0.2)
        assert [e["domain"] for e in daemon.events("libvirt_domain_gone")] == ["vm-b"]
        size = len(a.blocks())
        a.attach_dimm(1 * GiB)
        a.wait_blocks(lambda bl: len(bl) >= size + 8 and not offline(bl), "vm-a still served")
        counts = daemon.onlined()
        assert daemon.alive()
    # each of vm-a's blocks counted once as hotplugd's (none lost to the restart, none twice)
    print(f"onlined by domain: {counts}")
    assert counts["vm-a"] == 8 + 128 + 8
