"""A devdax device another user's process maps is never converted under the shipped unit (issue 22, point 2).

One systemd guest (systemd as PID 1, ``hotplugd.service`` installed by ``systemd/install.py`` as
shipped, its hardening untouched) with one 2 GiB NVDIMM on memory-only node 1 made ``dax0.0``
(devdax) by ndctl. A process of uid 65534 (a transient unit, ``User=65534``) maps ``/dev/dax0.0``
(its fd closed: only ``/proc/PID/maps`` shows it) and writes a pattern. Then, in order:

1. the config names ``dax0.0`` but the unit has no dax drop-in (the issue's setup: no capability,
   ``ProtectProc=invisible``): hotplugd refuses the conversion ("possibly in use": /proc hides the
   process) instead of pulling the memory from under it;
2. ``install.py`` run again adds ``hotplugd.service.d/20-dax.conf`` (the config names a dax device);
   restarted, hotplugd (CapEff exactly CAP_SYS_PTRACE and CAP_DAC_READ_SEARCH) sees the process and
   names it (``dax_not_converted``, and ``hotplugd check``); ``systemd-analyze security`` in the guest
   scores the unit with its drop-in at most 1.5 (1.2 measured);
3. the device is still devdax and the process reads back what it wrote; it exits;
4. a rescan (SIGUSR1) converts ``dax0.0``: its 15 blocks come online Movable on node 1.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from harness import Assets, GuestConfig
from harness.nvdimm import DaxTools, nvdimm_args
from harness.pytest_plugin import provisioned
from harness.systemd_guest import SystemdGuest, find_systemd_assets

pytestmark = pytest.mark.vm

SERVICE = "hotplugd.service"
SOCKET = "hotplugd.socket"
CONFIG = "/etc/hotplugd/hotplugd.toml"
DROPIN = f"/etc/systemd/system/{SERVICE}.d/20-dax.conf"
USER_UNIT = "daxuser.service"
WORK = "/run/daxuser"
DAX_BLOCKS = 15  # a 2 GiB NVDIMM's devdax namespace, aligned to 128 MiB blocks
TIMEOUT = 120
#: The other user's application: maps 2 MiB of /dev/dax0.0 shared, closes the fd, writes a pattern, and
#: reads it back once told to (a device unbound meanwhile kills it with SIGBUS: no result at all).
USER_PROGRAM = f"""
import mmap, os, time
fd = os.open("/dev/dax0.0", os.O_RDWR)
view = mmap.mmap(fd, 2 << 20, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
os.close(fd)
pattern = bytes(range(251)) * ((2 << 20) // 251) + bytes((2 << 20) % 251)
view[:] = pattern
open("{WORK}/mapped", "w").write(str(os.getpid()))
while not os.path.exists("{WORK}/release"):
    time.sleep(0.1)
open("{WORK}/result", "w").write("intact" if view[:] == pattern else "changed")
"""
Timings: dict[str, float] = {}
Scores: dict[str, float] = {}


class step:
    def __init__(self, name: str) -> None:
        self.name = name

    def __enter__(self) -> None:
        self.t0 = time.monotonic()

    def __exit__(self, *exc: object) -> None:
        Timings[self.name] = time.monotonic() - self.t0


@pytest.fixture(scope="module")
def guest(vm_assets: Assets, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[SystemdGuest, DaxTools]]:
    assets = provisioned(find_systemd_assets, vm_assets)
    tools = provisioned(DaxTools.find, vm_assets.project)
    backing = tmp_path_factory.mktemp("nvdimm")
    config = GuestConfig(memhp_default_state="offline", memory="2G", cpus=2, slots=2, maxmem="8G", virtio_mem=False,
                         qemu_args=nvdimm_args([backing / "nv1"]))
    t0 = time.monotonic()
    with step("boot to running"):
        sd = SystemdGuest(config, assets)
        sd.start()
    try:
        with step("modules, devdax, install"):
            tools.load_modules(sd)
            made = tools.devdax(sd, "namespace0.0")
            assert made["daxregion"]["devices"][0]["chardev"] == "dax0.0", made
            program = sd.guest_venv()
            sd.agent.run(["/usr/bin/python3", str(sd.assets.project / "systemd/install.py"), "--exec", program],
                         timeout=120)
        yield sd, tools
    finally:
        sd.close()
        Timings["total"] = time.monotonic() - t0
        print("\ndax unit guest timings: " + ", ".join(f"{k} {v:.1f} s" for k, v in Timings.items())
              + "".join(f"; {k} {v}" for k, v in Scores.items()))


def driver(sd: SystemdGuest) -> str:
    return Path(sd.agent.run(["readlink", "/sys/bus/dax/devices/dax0.0/driver"], check=False).stdout.strip()).name


def events(journal: str, name: str) -> list[dict]:
    found = []
    for line in journal.splitlines():
        start = line.find("{")
        if start >= 0 and f'"event": "{name}"' in line:
            found.append(json.loads(line[start:]))
    return found


def start_user(sd: SystemdGuest) -> int:
    """The other user's process, mapping the device: its pid once the pattern is written."""
    sd.agent.run(["sh", "-c", f"rm -rf {WORK} && mkdir {WORK} && chown 65534:65534 {WORK} /dev/dax0.0"])
    sd.agent.write_file(f"{WORK}/app.py", USER_PROGRAM)
    sd.agent.run(["systemd-run", f"--unit={USER_UNIT}", "--uid=65534", "--gid=65534", "--property=Type=exec",
                  "/usr/bin/python3", f"{WORK}/app.py"])
    sd.agent.run(f"for i in $(seq 300); do [ -s {WORK}/mapped ] && exit 0; sleep 0.2; done; exit 1", timeout=90)
    pid = int(sd.agent.read_file(f"{WORK}/mapped"))
    assert sd.agent.read_file(f"/proc/{pid}/status").count("65534") >= 4  # real, effective, saved, fs uid
    return pid


def test_a_device_another_user_maps_stays_devdax_until_it_exits_then_is_onlined_movable(
        guest: tuple[SystemdGuest, DaxTools]) -> None:
    sd, _ = guest
    with step("the other user's process maps dax0.0"):
        pid = start_user(sd)
    sd.agent.write_file(CONFIG, sd.agent.read_file(CONFIG) + '\n[[plugins.sysfs.dax]]\ndevice = "dax0.0"\n')
    assert sd.agent.run(["test", "-e", DROPIN], check=False).returncode == 1  # installed before the rule

    # 1. no drop-in: no capability, ProtectProc=invisible; the process is hidden: refused, not converted
    cursor = sd.cursor()
    with step("start without the drop-in"):
        sd.systemctl("start", SOCKET, SERVICE, timeout=180)
        log = sd.wait_journal('"event": "dax_not_converted"', SERVICE, cursor, timeout=TIMEOUT)
    [refused] = events(log, "dax_not_converted")
    assert "hidepid=invisible" in refused["detail"] and "grant CAP_SYS_PTRACE" in refused["detail"], refused
    assert driver(sd) == "device_dax" and not events(log, "dax_converted")
    sd.systemctl("stop", SERVICE)

    # 2. install.py again: the config names a dax device, so the drop-in comes; the process is seen and named
    out = sd.agent.run(["/usr/bin/python3", str(sd.assets.project / "systemd/install.py"),
                        "--exec", sd.guest_venv()], timeout=120).stdout
    assert f"wrote {DROPIN}" in out
    cursor = sd.cursor()
    with step("start with the drop-in"):
        sd.systemctl("start", SERVICE, timeout=180)
        log = sd.wait_journal('"event": "dax_not_converted"', SERVICE, cursor, timeout=TIMEOUT)
    [refused] = events(log, "dax_not_converted")
    assert refused["detail"] == f"/dev/dax0.0 is mapped or open by pid {pid}", refused
    main = sd.show(SERVICE, "MainPID")["MainPID"]
    caps = re.search(r"^CapEff:\s+(\w+)$", sd.agent.read_file(f"/proc/{main}/status"), re.M)
    assert caps and int(caps.group(1), 16) == (1 << 19) | (1 << 2)  # CAP_SYS_PTRACE, CAP_DAC_READ_SEARCH: no more
    # the exposure systemd scores for the unit with its drop-in, in the guest (offline here: 1.2)
    scored = sd.agent.run(["systemd-analyze", "security", "--no-pager", SERVICE], check=False).stdout
    exposure = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", scored)
    assert exposure and float(exposure.group(1)) <= 1.5, scored
    Scores["exposure"] = float(exposure.group(1))
    with step("hotplugd check"):
        check = sd.agent.run([sd.guest_venv(), "check", "--config", CONFIG], check=False, timeout=120)
    assert "dax device dax0.0 (node 1) is named by plugins.sysfs.dax but cannot be converted" in check.stdout, (
        check.stdout + check.stderr)
    assert f"mapped or open by pid {pid}" in check.stdout

    # 3. the device is untouched and the process keeps its memory
    assert driver(sd) == "device_dax"
    before = {b.index for b in sd.agent.memory_blocks()}
    sd.agent.run(["touch", f"{WORK}/release"])
    sd.agent.run(f"for i in $(seq 300); do [ -s {WORK}/result ] && exit 0; sleep 0.2; done; exit 1", timeout=90)
    assert sd.agent.read_file(f"{WORK}/result") == "intact"
    sd.agent.run(f"while systemctl is-active -q {USER_UNIT}; do sleep 0.2; done", timeout=60)
    assert sd.show(USER_UNIT, "Result").get("Result", "success") == "success"

    # 4. nobody maps it now: a rescan converts it, and its blocks come online Movable on node 1
    cursor = sd.cursor()
    with step("rescan to 15 blocks online"):
        sd.systemctl("kill", "-s", "SIGUSR1", "--kill-who=main", SERVICE)
        sd.wait_journal('"event": "dax_converted"', SERVICE, cursor, timeout=TIMEOUT)
        blocks = sd.agent.wait_blocks(exclude=before, min_count=DAX_BLOCKS, state="online", timeout=TIMEOUT).blocks
    assert driver(sd) == "kmem"
    assert [(b.node, b.state, b.valid_zones) for b in blocks] == [(1, "online", ("Movable",))] * DAX_BLOCKS
    assert sd.show(SERVICE, "ActiveState")["ActiveState"] == "active"
    sd.systemctl("stop", SOCKET, SERVICE)
