"""From early boot: memory plugged at boot is online before ``multi-user.target``, under the installed unit.

The guest boots :func:`harness.debroot.installed`: the clean Debian 13 root with hotplugd's packages installed
by apt before the boot, its units enabled as the package enables them (``hotplugd.service`` in
``sysinit.target.wants``), with two 1 GiB DIMMs on QEMU's command line (plugged at start: ACPI describes them
and the kernel adds their 16 blocks while it boots) and the kernel's onlining off
(``memhp_default_state=offline``). No process of the test's runs hotplugd: systemd starts it, early.

Every block is online by the time ``multi-user.target`` is reached, proven by order, not by timing: hotplugd
says READY only once the blocks its start-up scan found offline are online (its ``start_onlined`` line: 16
blocks, none left), systemd records READY (the service's ``ActiveEnterTimestampMonotonic``) before
``sysinit.target``, and ``multi-user.target`` comes after that. The journal gives the timeline (``since_boot``
on hotplugd's ``plan``, ``start_onlined`` and ``ready`` lines), printed with ``pytest -s``.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from debguest import debian_guest, metrics_text, running
from harness import Assets, GuestConfig
from harness.systemd_guest import SystemdGuest

pytestmark = pytest.mark.vm

REPO = Path(__file__).resolve().parents[2]
SERVICE = "hotplugd.service"
#: Two 1 GiB DIMMs plugged at start (ids of their own: the harness's hot-adds number theirs from 0).
DIMMS = 2
BOOT_DIMMS = tuple(arg for n in range(DIMMS) for arg in (
    "-object", f"memory-backend-ram,id=bootmem{n},size=1G", "-device", f"pc-dimm,id=bootdimm{n},memdev=bootmem{n}"))
EXPOSURE = re.compile(r"Overall exposure level for \S+: (\d+\.\d+)")
TIMES: dict[str, float] = {}


@pytest.fixture(scope="module")
def booted(vm_assets: Assets) -> Iterator[SystemdGuest]:
    """The installed root booted to ``running`` with the DIMMs plugged from the start."""
    t0 = time.monotonic()
    guest = debian_guest(vm_assets, GuestConfig(memhp_default_state="offline", memory="2G", slots=8, maxmem="64G",
                                                virtio_mem=False, qemu_args=BOOT_DIMMS), installed=True)
    TIMES["installed root"] = time.monotonic() - t0
    with running(guest, TIMES, "debian boot guest"):
        yield guest


def hotplugd_log(guest: SystemdGuest) -> dict[str, dict[str, Any]]:
    """hotplugd's JSON lines of this boot by event (the first of each), with the journal's time since boot."""
    out = guest.agent.run(["journalctl", "-b", "--no-pager", "-o", "json", f"--unit={SERVICE}"], timeout=90).stdout
    events: dict[str, dict[str, Any]] = {}
    for line in out.splitlines():
        entry = json.loads(line)
        try:
            fields = json.loads(entry.get("MESSAGE", ""))
        except (TypeError, ValueError):
            continue  # PID 1's lines about the unit
        if isinstance(fields, dict) and "event" in fields:
            fields["journal_s"] = int(entry["__MONOTONIC_TIMESTAMP"]) / 1e6
            events.setdefault(fields["event"], fields)
    return events


def monotonic(guest: SystemdGuest, unit: str, prop: str = "ActiveEnterTimestampMonotonic") -> float:
    return int(guest.show(unit, prop)[prop]) / 1e6


def scrape(guest: SystemdGuest) -> dict[str, float]:
    return {line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1])
            for line in metrics_text(guest).splitlines() if line and not line.startswith("#")}


def test_memory_plugged_at_boot_is_online_by_multi_user_target(booted: SystemdGuest) -> None:
    guest = booted
    state = guest.show(SERVICE, "ActiveState", "SubState", "UnitFileState", "After", "Before", "WantedBy")
    assert (state["ActiveState"], state["SubState"], state["UnitFileState"]) == ("active", "running", "enabled"), \
        state
    links = guest.agent.run(["ls", "/etc/systemd/system/sysinit.target.wants"]).stdout.split()
    assert SERVICE in links  # enabled as the package enables it: from early boot
    blocks = guest.agent.memory_blocks()
    assert not [b.index for b in blocks if not b.online], [(b.index, b.state) for b in blocks]
    log = hotplugd_log(guest)
    assert log["plan"]["onliner"] == "kernel", log["plan"]  # the kernel onlines what is hot-added from now on
    done = log["start_onlined"]
    assert (done["blocks"], done["left"]) == (8 * DIMMS, 0), done  # 16 blocks of 128 MiB online before READY
    assert "kernel's auto-online was off" in log["kernel_takeover"]["reason"]
    ready, sysinit, multi_user = (monotonic(guest, SERVICE), monotonic(guest, "sysinit.target"),
                                  monotonic(guest, "multi-user.target"))
    assert 0 < ready <= sysinit <= multi_user  # READY, then sysinit.target, then multi-user.target: systemd's order
    assert log["plan"]["since_boot"] <= done["since_boot"] <= log["ready"]["since_boot"]
    metrics = scrape(guest)
    assert metrics['hotplugd_phases_total{trigger="kernel_off_at_start"}'] == 1
    assert sum(v for k, v in metrics.items() if k.startswith("hotplugd_blocks_onlined_total")) == 8 * DIMMS
    started = monotonic(guest, SERVICE, "ExecMainStartTimestampMonotonic")
    cycles = guest.agent.run(["sh", "-c", "journalctl -b --no-pager -o cat | grep -i 'ordering cycle' || true"]).stdout
    assert cycles == "", cycles
    timeline = (f"hotplugd started {started:.2f} s, its first line {log['starting']['journal_s']:.2f} s, "
                f"plan applied {log['plan']['since_boot']:.2f} s, "
                f"last of {done['blocks']} blocks online {done['since_boot']:.2f} s ({done['seconds']:.2f} s), "
                f"READY {log['ready']['since_boot']:.2f} s (systemd: {ready:.2f} s), sysinit.target {sysinit:.2f} s, "
                f"multi-user.target {multi_user:.2f} s since boot")
    security = guest.agent.run(["systemd-analyze", "security", "--no-pager", SERVICE], timeout=120).stdout
    exposure = float(EXPOSURE.search(security).group(1))  # type: ignore[union-attr]
    print(f"\nboot timeline: {timeline}\nhotplugd.service After={state['After']}\nexposure as installed: {exposure}")
    assert exposure <= 1.5  # the hardening holds from early boot
