"""hotplugd's units under a real systemd (PID 1 in a QEMU guest), checked through systemctl and the journal.

One guest boot for all seven checks, in order (each leaves the service as the next expects
it, and each starts it again if it is not). The guest is the clean Debian 13 root with hotplugd's
packages, built from this checkout, installed by ``apt`` before the boot (:mod:`debguest`; the
install itself is ``test_deb_guest.py``'s): the unit is the package's, the program the package's
``/usr/bin/hotplugd`` on Debian's own Python libraries. The only drop-in is this test's
``50-vmtest.conf`` (the test-only stall hook and a 6 s watchdog); the hardening is untouched. The
other way in, ``systemd/install.py`` from a checkout with a venv (no package), runs check 1 in
``test_checkout_paths.py``.
"""

from __future__ import annotations

import re
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from debguest import debian_guest, running
from harness import Assets, GiB, GuestConfig
from harness.systemd_guest import SystemdGuest

pytestmark = pytest.mark.vm

SERVICE = "hotplugd.service"
SOCKET = "hotplugd.socket"
CONFIG = "/etc/hotplugd/hotplugd.toml"
METRICS_URL = "http://127.0.0.1:10964/metrics"
WATCHDOG_SEC = 6
DROPIN = f"""[Service]
# Test only: SIGUSR2 stalls the daemon's event loop (hotplugd/faults.py).
Environment=HOTPLUGD_TEST_HOOKS=1
WatchdogSec={WATCHDOG_SEC}s
"""
REPO = Path(__file__).resolve().parents[2]
EXPOSURE = re.compile(r"Overall exposure level for \S+: (\d+\.\d+)")


def exposure(output: str) -> float:
    match = EXPOSURE.search(output)
    assert match, output
    return float(match.group(1))


class Timer:
    """Seconds per step, printed at the end of the module (``pytest -s``) for the budget."""

    steps: dict[str, float] = {}

    def __init__(self, name: str) -> None:
        self.name = name

    def __enter__(self) -> Timer:
        self.t0 = time.monotonic()
        return self

    def __exit__(self, *exc: object) -> None:
        self.steps[self.name] = time.monotonic() - self.t0


@pytest.fixture(scope="module")
def sd(vm_assets: Assets) -> Iterator[SystemdGuest]:
    """The Debian guest, booted to ``running`` with hotplugd's packages installed, its units stopped."""
    guest = debian_guest(vm_assets, GuestConfig(memhp_default_state="offline", memory="2G", slots=8, maxmem="64G",
                                                virtio_mem=False), installed=True)
    with running(guest, Timer.steps, "systemd guest"):
        with Timer("configure"):
            configure(guest)
        yield guest


def install(guest: SystemdGuest) -> None:
    """The units and default config, installed by the guest's checkout's ``systemd/install.py`` with
    ``ExecStart=`` the guest venv (:meth:`SystemdGuest.guest_venv`): the recipe where no package exists."""
    repo = guest.assets.project
    program = guest.guest_venv()
    guest.agent.run(["/usr/bin/python3", str(repo / "systemd" / "install.py"), "--exec", program], timeout=120)
    configure(guest)


def configure(guest: SystemdGuest) -> None:
    """This test's config and drop-in on the installed units, which are left stopped (the package starts
    them): check 1 starts them."""
    # These checks watch hotplugd's own onlining (a stop in the middle of its work, its counters):
    # the plan is pinned to it. Where the kernel onlines instead: tests/vm/test_kernel_mode.py.
    guest.agent.write_file(CONFIG, set_key(guest.agent.read_file(CONFIG), "onliner", '"hotplugd"'))
    guest.agent.run(["mkdir", "-p", f"/etc/systemd/system/{SERVICE}.d"])
    guest.agent.write_file(f"/etc/systemd/system/{SERVICE}.d/50-vmtest.conf", DROPIN)
    guest.systemctl("daemon-reload")
    guest.systemctl("stop", SERVICE, SOCKET, timeout=120)


def new_blocks(sd: SystemdGuest, before: set[int]) -> list:
    return [b for b in sd.agent.memory_blocks() if b.index not in before]


def ensure_running(sd: SystemdGuest) -> None:
    if sd.show(SERVICE, "ActiveState")["ActiveState"] != "active":
        sd.systemctl("start", SOCKET, SERVICE, timeout=180)


def lines(journal: str) -> list[str]:
    return journal.splitlines()


def set_key(toml: str, key: str, value: str) -> str:
    """``toml`` with the first line ``key = ...`` at the start of a line set to ``value``."""
    new, count = re.subn(rf"^{re.escape(key)} = .*$", f"{key} = {value}", toml, count=1, flags=re.M)
    assert count == 1, f"no {key} line in {CONFIG}"
    return new


def first_index(log: list[str], text: str) -> int:
    return next(i for i, line in enumerate(log) if text in line)


# -- 1 ------------------------------------------------------------------------------------------


def test_start_is_active_only_after_ready_and_a_hot_add_is_onlined(sd: SystemdGuest) -> None:
    start_and_online_a_hot_add(sd)


def start_and_online_a_hot_add(sd: SystemdGuest) -> None:
    """Check 1, also run from a checkout elsewhere (tests/vm/test_checkout_paths.py)."""
    cursor = sd.cursor()
    with Timer("start"):
        sd.systemctl("start", SOCKET, SERVICE, timeout=180)  # Type=notify: returns once READY=1 came
    state = sd.show(SERVICE, "ActiveState", "SubState", "Type", "MainPID", "StatusText", "WatchdogUSec")
    assert (state["ActiveState"], state["SubState"], state["Type"]) == ("active", "running", "notify")
    assert state["StatusText"].startswith("pending ")
    log = lines(sd.journal(SERVICE, cursor))
    started = first_index(log, "Started hotplugd.service")
    # The coldplug scan and the daemon's READY come before systemd calls the unit started.
    assert first_index(log, '"event": "rescan"') < first_index(log, '"event": "ready"') < started
    # The uevent socket (NETLINK_KOBJECT_UEVENT: protocol 15, group 1) is bound in the daemon's own netns.
    netlink = sd.agent.read_file(f"/proc/{state['MainPID']}/net/netlink").splitlines()[1:]
    assert any(row.split()[1] == "15" and int(row.split()[3], 16) == 1 for row in netlink)

    before = {b.index for b in sd.agent.memory_blocks()}
    with Timer("hot-add 1 GiB to online"):
        sd.qmp.hotplug_dimm(GiB)
        result = sd.agent.wait_blocks(exclude=before, min_count=8, state="online", timeout=90)
    assert len(result.blocks) == 8
    assert sd.show(SERVICE, "MainPID")["MainPID"] == state["MainPID"]  # onlined by that same process


# -- 2 ------------------------------------------------------------------------------------------


def test_metrics_are_served_through_the_socket_unit_with_private_network(sd: SystemdGuest) -> None:
    ensure_running(sd)
    svc = sd.show(SERVICE, "PrivateNetwork", "MainPID", "TriggeredBy")
    assert svc["PrivateNetwork"] == "yes" and SOCKET in svc["TriggeredBy"]
    assert sd.show(SOCKET, "Listen", "ActiveState") == {"Listen": "127.0.0.1:10964 (Stream)", "ActiveState": "active"}
    pid = svc["MainPID"]
    namespaces = sd.agent.run(["readlink", "/proc/1/ns/net", f"/proc/{pid}/ns/net"]).stdout.split()
    assert namespaces[0] != namespaces[1]  # the daemon has no share of the host's network
    text = sd.agent.run(["/usr/bin/python3", "-c",
                         f"import urllib.request; print(urllib.request.urlopen({METRICS_URL!r}).read().decode())"],
                        timeout=60).stdout
    assert 'hotplugd_build_info{backend="sysfs"' in text
    onlined = sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
                  if line.startswith("hotplugd_blocks_onlined_total{"))
    assert onlined >= 8  # the hot-add of the previous check, counted by the serving process


# -- 3 ------------------------------------------------------------------------------------------


def test_a_stalled_loop_is_killed_by_the_watchdog_and_restarted(sd: SystemdGuest) -> None:
    ensure_running(sd)
    restarts = int(sd.show(SERVICE, "NRestarts")["NRestarts"])
    old_pid = sd.show(SERVICE, "MainPID")["MainPID"]
    cursor = sd.cursor()
    with Timer("watchdog: stall to online after restart"):
        sd.systemctl("kill", "--kill-who=main", "--signal=SIGUSR2", SERVICE)
        sd.wait_journal('"event": "test_stall"', SERVICE, cursor)
        before = {b.index for b in sd.agent.memory_blocks()}
        sd.qmp.hotplug_dimm(GiB)  # while the loop is stalled: these blocks wait for the next instance
        log = sd.wait_journal("Failed with result 'watchdog'", SERVICE, cursor, timeout=WATCHDOG_SEC * 10)
        result = sd.agent.wait_blocks(exclude=before, min_count=8, state="online", timeout=180)
    assert f"Watchdog timeout (limit {WATCHDOG_SEC}s)!" in log
    assert "with signal SIGABRT" in log
    # faulthandler's dump: the loop was stuck in the test hook's sleep.
    assert "Fatal Python error: Aborted" in log and "in stall_loop" in log
    state = sd.show(SERVICE, "NRestarts", "ActiveState", "SubState", "MainPID")
    assert int(state["NRestarts"]) == restarts + 1
    assert (state["ActiveState"], state["SubState"]) == ("active", "running")
    assert state["MainPID"] != old_pid
    assert len(result.blocks) == 8
    # The new instance's coldplug scan queued them.
    after = lines(sd.journal(SERVICE, cursor))
    since_kill = after[first_index(after, "Failed with result 'watchdog'"):]
    rescans = [line for line in since_kill if '"event": "rescan"' in line]
    assert rescans and '"queued": 0' not in rescans[0]


# -- 4 ------------------------------------------------------------------------------------------


def test_reload_applies_a_changed_config_and_refuses_a_broken_one(sd: SystemdGuest) -> None:
    ensure_running(sd)
    original = sd.agent.read_file(CONFIG)
    pid = sd.show(SERVICE, "MainPID")["MainPID"]
    try:
        changed = set_key(original, "parallel_hotplug_ratio", "0.5")
        changed = set_key(changed, "policy", '"movable"')  # the first one is [zones]'s
        sd.agent.write_file(CONFIG, changed)
        cursor = sd.cursor()
        with Timer("reload"):
            sd.systemctl("reload", SERVICE)
            sd.wait_journal('"event": "reloaded"', SERVICE, cursor)
        # systemd 252's reload returns before the daemon handled SIGHUP: the journal line says it has.
        assert "ratio 0.5, zones movable" in sd.show(SERVICE, "StatusText")["StatusText"]

        sd.agent.write_file(CONFIG, set_key(changed, "parallel_hotplug_ratio", "-3"))
        cursor = sd.cursor()
        sd.systemctl("reload", SERVICE)
        log = sd.wait_journal('"event": "reload_refused"', SERVICE, cursor)
        assert "scheduler.parallel_hotplug_ratio" in log
        state = sd.show(SERVICE, "ActiveState", "SubState", "MainPID", "StatusText")
        assert (state["ActiveState"], state["SubState"], state["MainPID"]) == ("active", "running", pid)
        assert "ratio 0.5, zones movable" in state["StatusText"]  # the previous config stays
    finally:
        sd.agent.write_file(CONFIG, original)
    sd.systemctl("reload", SERVICE)


# -- 5 ------------------------------------------------------------------------------------------


def test_stop_during_a_phase_exits_cleanly_and_the_next_start_onlines_the_rest(sd: SystemdGuest) -> None:
    ensure_running(sd)
    before = {b.index for b in sd.agent.memory_blocks()}
    online = sum(1 for b in sd.agent.memory_blocks() if b.online)
    cursor = sd.cursor()
    sd.qmp.hotplug_dimm(16 * GiB)  # 128 blocks: their uevents alone take about a second to arrive
    # Stop the moment the daemon has onlined the first new block (checked in the guest).
    with Timer("stop during a phase"):
        sd.agent.run(f"until [ $(grep -l '^online' /sys/devices/system/memory/memory*/state | wc -l) -gt {online} ];"
                     f" do :; done; systemctl stop {SERVICE}", timeout=120)
    state = sd.show(SERVICE, "ActiveState", "Result", "ExecMainCode", "ExecMainStatus")
    assert state == {"ActiveState": "inactive", "Result": "success", "ExecMainCode": "1", "ExecMainStatus": "0"}
    added = new_blocks(sd, before)
    done = sum(1 for b in added if b.online)
    assert 0 < done < len(added) == 128, f"the stop did not land during the work ({done} of {len(added)} online)"
    log = sd.journal(SERVICE, cursor)
    assert '"event": "stopping"' in log and '"event": "stopped"' in log
    assert "Deactivated successfully." in log

    with Timer("start and online the rest"):
        sd.systemctl("start", SERVICE, timeout=180)
        sd.agent.wait_blocks(exclude=before, min_count=128, state="online", timeout=180)
    assert all(b.online for b in sd.agent.memory_blocks())


# -- 6 ------------------------------------------------------------------------------------------


def test_a_config_error_at_start_fails_the_unit_with_78_and_no_restart(sd: SystemdGuest) -> None:
    original = sd.agent.read_file(CONFIG)
    sd.systemctl("stop", SERVICE)
    cursor = sd.cursor()
    try:
        sd.agent.write_file(CONFIG, set_key(original, "log_level", '"loud"'))
        with Timer("start with a config error"):
            failed = sd.systemctl("start", SERVICE, check=False, timeout=180)
        assert failed.returncode != 0
        # "failed", not "activating (auto-restart)": systemd decided at the exit that no restart follows.
        state = sd.show(SERVICE, "ActiveState", "Result", "ExecMainStatus", "NRestarts")
        assert state == {"ActiveState": "failed", "Result": "exit-code", "ExecMainStatus": "78", "NRestarts": "0"}
        log = sd.journal(SERVICE, cursor)
        assert "status=78/CONFIG" in log and "log_level: expected one of" in log
        assert "Scheduled restart job" not in log and "Traceback" not in log
    finally:
        sd.agent.write_file(CONFIG, original)
        sd.systemctl("reset-failed", SERVICE, check=False)


# -- 7 ------------------------------------------------------------------------------------------


def test_security_exposure_in_the_guest_matches_the_offline_figure(sd: SystemdGuest) -> None:
    offline = subprocess.run(["systemd-analyze", "security", "--offline=yes", "--no-pager",
                              str(REPO / "systemd" / SERVICE)], capture_output=True, text=True, check=False)
    live = sd.agent.run(["systemd-analyze", "security", "--no-pager", SERVICE], check=False, timeout=120)
    print(f"\nsystemd-analyze security: offline {exposure(offline.stdout)}, in the guest {exposure(live.stdout)}")
    assert exposure(live.stdout) == exposure(offline.stdout) <= 1.5
