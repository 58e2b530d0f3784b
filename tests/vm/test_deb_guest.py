"""hotplugd's Debian packages installed with apt in a Debian 13 guest and run by their own unit.

One guest boots the clean Debian 13 root :mod:`harness.debroot` made (systemd 257 as PID 1, the
test kernel), with the packages built in it; the checks run in order against the INSTALLED unit,
never a process the test starts:

1. ``apt install ./hotplugd_*.deb ./python3-hotplugd_*.deb`` (the guest has no network: the
   dependencies are Debian's, already in the root) enables and starts the socket and the service:
   active once it sent READY=1 (``Type=notify``); ``hotplugd check`` prints the plan; exposure.
2. a DIMM hot-added comes online, proven and counted in the metrics scraped through hotplugd.socket.
3. ``systemctl kill -s KILL hotplugd``: another DIMM added meanwhile still comes online (the knobs
   stay as hotplugd set them) and the restarted service counts it.
4. ``apt purge``: the knobs as found before the install, and no file of hotplugd's left behind.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator

import pytest
from debguest import apt_install, debian_guest, metrics_text, running
from harness import Assets, GiB, GuestConfig
from harness.systemd_guest import SystemdGuest

pytestmark = pytest.mark.vm

SERVICE, SOCKET = "hotplugd.service", "hotplugd.socket"
METRICS_URL = "http://127.0.0.1:10964/metrics"
KNOBS = ("/sys/devices/system/memory/auto_online_blocks", "/sys/module/memory_hotplug/parameters/online_policy",
         "/sys/module/memory_hotplug/parameters/auto_movable_ratio")
#: What apt, dpkg and systemd keep of any package; hotplugd's own files must all go.
BOOKKEEPING = ("var/lib/dpkg/", "var/lib/apt/", "var/cache/", "var/log/", "var/lib/systemd/", "etc/ld.so.cache")
EXPOSURE = re.compile(r"Overall exposure level for \S+: (\d+\.\d+)")
TIMES: dict[str, float] = {}


@pytest.fixture(scope="module")
def deb(vm_assets: Assets) -> Iterator[SystemdGuest]:
    """The Debian 13 root booted to ``running``, the packages in its share (not installed yet)."""
    guest = debian_guest(vm_assets, GuestConfig(memhp_default_state="offline", memory="2G", slots=8, maxmem="64G",
                                                virtio_mem=False))
    with running(guest, TIMES, "debian guest"):
        yield guest


def knobs(guest: SystemdGuest) -> dict[str, str]:
    return {path: guest.agent.read_file(path).strip() for path in KNOBS}


def scrape(guest: SystemdGuest) -> dict[str, float]:
    """The daemon's metrics through hotplugd.socket, summed per metric name."""
    sums: dict[str, float] = {}
    for line in metrics_text(guest).splitlines():
        if line and not line.startswith("#"):
            name = line.split("{", 1)[0].split(" ", 1)[0]
            sums[name] = sums.get(name, 0.0) + float(line.rsplit(" ", 1)[1])
    return sums


def online_blocks(metrics: dict[str, float]) -> float:
    return metrics.get("hotplugd_blocks_onlined_total", 0) + metrics.get("hotplugd_kernel_onlined_blocks_total", 0)


def files(guest: SystemdGuest) -> set[str]:
    """Every path of the guest's root file system (not /proc, /sys, /dev, /run, /tmp: -xdev)."""
    out = guest.agent.run(["find", "/", "-xdev", "-mindepth", "1"], timeout=180).stdout
    return {line.removeprefix("/") for line in out.splitlines()}


STATE: dict[str, object] = {}


def test_apt_install_starts_the_unit_and_check_prints_the_plan(deb: SystemdGuest) -> None:
    STATE["knobs"] = knobs(deb)
    STATE["files"] = files(deb)
    t0 = time.monotonic()
    done = apt_install(deb)
    TIMES["apt install"] = time.monotonic() - t0
    assert done.returncode == 0, done.stdout + done.stderr
    state = deb.show(SERVICE, "ActiveState", "SubState", "Type", "UnitFileState", "StatusText", "FragmentPath")
    assert (state["ActiveState"], state["SubState"], state["Type"]) == ("active", "running", "notify"), \
        done.stdout[-3000:] + "\n" + "\n".join(deb.journal(SERVICE).splitlines()[-60:])
    assert state["UnitFileState"] == "enabled" and state["FragmentPath"] == "/usr/lib/systemd/system/hotplugd.service"
    assert state["StatusText"].startswith("pending ")
    assert deb.show(SOCKET, "ActiveState")["ActiveState"] == "active"
    check = deb.agent.run(["hotplugd", "check"], timeout=120, check=False)
    assert check.returncode in (0, 1), check.stdout + check.stderr
    assert check.stdout.startswith("backend sysfs") or "plan (host):" in check.stdout, check.stdout
    assert "plan (host):" in check.stdout and "auto_online_blocks" in check.stdout
    print("\nhotplugd check, as installed:\n" + check.stdout)
    security = deb.agent.run(["systemd-analyze", "security", "--no-pager", SERVICE], timeout=120).stdout
    exposure = float(EXPOSURE.search(security).group(1))  # type: ignore[union-attr]
    print(f"exposure as installed: {exposure}")
    assert exposure <= 1.5


def test_a_hot_added_dimm_is_online_proven_and_counted_through_the_socket(deb: SystemdGuest) -> None:
    before = {b.index for b in deb.agent.memory_blocks()}
    counted = online_blocks(scrape(deb))
    t0 = time.monotonic()
    deb.qmp.hotplug_dimm(GiB)
    result = deb.agent.wait_blocks(exclude=before, min_count=8, state="online", timeout=120)
    TIMES["hot-add 1 GiB to online"] = time.monotonic() - t0
    assert len(result.blocks) == 8
    deadline = time.monotonic() + 60
    while online_blocks(metrics := scrape(deb)) < counted + 8 and time.monotonic() < deadline:
        time.sleep(1)
    assert online_blocks(metrics) == counted + 8, metrics  # each block read back and counted once
    assert metrics.get("hotplugd_zone_mismatches_total", 0) == 0


def test_killed_the_knobs_stay_a_dimm_still_comes_online_and_the_restart_counts_it(deb: SystemdGuest) -> None:
    old = deb.show(SERVICE, "MainPID", "NRestarts")
    census_before = scrape(deb).get("hotplugd_memory_blocks", 0)
    set_knobs = knobs(deb)
    deb.systemctl("kill", "-s", "KILL", SERVICE)
    before = {b.index for b in deb.agent.memory_blocks()}
    deb.qmp.hotplug_dimm(GiB)  # while the service is down or starting again
    result = deb.agent.wait_blocks(exclude=before, min_count=8, state="online", timeout=120)
    assert len(result.blocks) == 8 and knobs(deb) == set_knobs
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        now = deb.show(SERVICE, "MainPID", "NRestarts", "ActiveState")
        if now["ActiveState"] == "active" and now["MainPID"] not in ("0", old["MainPID"]):
            break
        time.sleep(1)
    assert now["ActiveState"] == "active" and int(now["NRestarts"]) == int(old["NRestarts"]) + 1, now
    census = scrape(deb).get("hotplugd_memory_blocks", 0)
    assert census == census_before + 8  # the restarted service counts the DIMM's blocks


def test_apt_purge_restores_the_knobs_as_found_and_leaves_no_file(deb: SystemdGuest) -> None:
    assert knobs(deb) != STATE["knobs"]  # hotplugd changed them (the kernel onlines under the default plan)
    done = deb.agent.run(["apt-get", "purge", "-y", "hotplugd", "python3-hotplugd"], timeout=300, check=False,
                         env={"DEBIAN_FRONTEND": "noninteractive"})
    assert done.returncode == 0, done.stdout + done.stderr
    print("\napt purge:\n" + done.stdout)
    assert knobs(deb) == STATE["knobs"]
    assert "restored auto_online_blocks" in done.stdout
    left = files(deb) - STATE["files"]  # type: ignore[operator]
    assert not [p for p in left if not p.startswith(BOOKKEEPING)], sorted(left)
    assert not [p for p in left if "hotplugd" in p], sorted(left)
