"""A dax device is converted only when hotplugd proves nobody uses it: a process it cannot inspect blocks it
(fail closed), and so does a /proc that hides processes (fake tree)."""

from __future__ import annotations

import errno
import json
import os
import shutil
import subprocess
import sys

import pytest
import structlog

from hotplugd_sysfs.dax import DaxHost
from hotplugd_sysfs.daxrules import parse_rules
from hotplugd_sysfs.daxusers import CAP_DAC_READ_SEARCH, CAP_SYS_PTRACE, device_users
from hotplugd_sysfs.sysfs import Sysfs
from hotplugd_sysfs.testing.fakedax import FakeDax

PTRACE, DAC = 1 << CAP_SYS_PTRACE, 1 << CAP_DAC_READ_SEARCH


@pytest.fixture
def dax(fake_sysfs):
    fake_sysfs.add_node(1)
    found = FakeDax(fake_sysfs)
    found.add_device("dax0.0", node=1)
    return found


def host(fake_sysfs):
    return DaxHost(Sysfs(fake_sysfs.sys, fake_sysfs.proc, fake_sysfs.io), fake_sysfs.proc,
                   parse_rules([{"device": "dax0.0"}]))


def users(fake_sysfs):
    return device_users(fake_sysfs.io, fake_sysfs.proc, "dax0.0")


def test_a_process_whose_maps_cannot_be_read_blocks_the_conversion(fake_sysfs, dax):
    """The issue's failure: root without CAP_SYS_PTRACE cannot read another user's maps; today's code
    skipped such a process as if it used nothing and unbound the device from under it."""
    dax.add_process(4242, uid=65534, comm="pmemapp")
    dax.deny_process(4242)
    h = host(fake_sysfs)
    with structlog.testing.capture_logs() as logs:
        [result] = h.reconcile()
    assert not result.ok
    assert dax.ops == [] and dax.driver("dax0.0") == "device_dax"  # never unbound
    assert result.detail == (
        "/dev/dax0.0 may be mapped or open: hotplugd could not inspect pid 4242 (uid 65534, comm 'pmemapp': "
        "maps EACCES); grant CAP_SYS_PTRACE and CAP_DAC_READ_SEARCH (the unit's drop-in "
        "hotplugd.service.d/20-dax.conf: systemd/install.py --dax, docs/dax.md)")
    [entry] = [e for e in logs if e["event"] == "dax_not_converted"]
    assert entry["uninspected"] == [{"pid": 4242, "uid": 65534, "comm": "pmemapp", "file": "maps",
                                     "errno": errno.EACCES}]
    # hotplugd check says the same, through the backend's conflicts
    [message] = h.conflicts()
    assert "dax0.0" in message and "could not inspect pid 4242 (uid 65534" in message
    assert message.endswith("it is left in devdax mode")


def test_an_unreadable_fd_directory_blocks_it_too(fake_sysfs, dax):
    """With CAP_SYS_PTRACE only, maps read but /proc/PID/fd (mode 0500) stays shut: still possibly in use."""
    dax.add_process(77, uid=1000, comm="db")
    dax.deny_process(77, files=("fd",))
    dax.mount_proc(hidepid="invisible", caps=PTRACE)
    found = users(fake_sysfs)
    assert not found.clear and found.missing == ("CAP_DAC_READ_SEARCH",)
    assert [(u.pid, u.what, u.errno) for u in found.uninspected] == [(77, "fd", errno.EACCES)]
    assert found.describe().endswith("could not inspect pid 77 (uid 1000, comm 'db': fd EACCES); grant "
                                     "CAP_DAC_READ_SEARCH (the unit's drop-in hotplugd.service.d/20-dax.conf: "
                                     "systemd/install.py --dax, docs/dax.md)")
    assert not host(fake_sysfs).reconcile()[0].ok


def test_a_process_gone_meanwhile_uses_nothing(fake_sysfs, dax):
    dax.add_process(5, uid=1000)
    dax.deny_process(5, code=errno.ESRCH)  # exited between the listing and the read
    dax.add_process(6, uid=1000)
    dax.deny_process(6, code=errno.ENOENT)
    assert users(fake_sysfs).clear
    [result] = host(fake_sysfs).reconcile()
    assert result.ok and dax.driver("dax0.0") == "kmem"


def test_any_other_error_is_not_proof_either(fake_sysfs, dax):
    dax.add_process(9, uid=0, comm="odd")
    dax.deny_process(9, code=errno.EIO)
    assert [(u.pid, u.errno) for u in users(fake_sysfs).uninspected] == [(9, errno.EIO)]


def test_many_uninspected_processes_are_counted_beyond_the_first_three(fake_sysfs, dax):
    for pid in range(10, 16):
        dax.add_process(pid, uid=pid)
        dax.deny_process(pid)
    text = users(fake_sysfs).describe()
    assert "pid 10 " in text and "pid 12 " in text and "pid 13 " not in text and "and 3 more" in text


def test_a_process_seen_using_it_is_named_before_the_uninspected(fake_sysfs, dax):
    dax.open_device("dax0.0", pid=300)  # open, not mapped: an fd link
    dax.add_process(301, uid=65534)
    dax.deny_process(301)
    found = users(fake_sysfs)
    assert found.pids == (300,) and found.describe() == "/dev/dax0.0 is mapped or open by pid 300"


def test_a_proc_hiding_processes_proves_nothing_without_cap_sys_ptrace(fake_sysfs, dax):
    """ProtectProc=invisible lists only the processes hotplugd may trace: an empty look is no proof."""
    dax.mount_proc(hidepid="invisible", caps=0)
    found = users(fake_sysfs)
    assert not found.clear and found.missing == ("CAP_SYS_PTRACE", "CAP_DAC_READ_SEARCH")
    assert "mounted hidepid=invisible" in found.describe() and "grant CAP_SYS_PTRACE and CAP_DAC_READ_SEARCH" in (
        found.describe())
    [result] = host(fake_sysfs).reconcile()
    assert not result.ok and dax.ops == []
    # with the capabilities (the drop-in), every process is listed and inspected: converted
    dax.mount_proc(hidepid="invisible", caps=PTRACE | DAC)
    assert users(fake_sysfs).clear
    assert host(fake_sysfs).reconcile()[0].ok


def test_hidepid_with_unknown_capabilities_fails_closed_and_a_plain_proc_does_not_hide(fake_sysfs, dax):
    dax.mount_proc(hidepid="invisible", caps=None)
    assert "hidepid=invisible" in users(fake_sysfs).hidden
    dax.mount_proc(hidepid="off", caps=0)
    assert users(fake_sysfs).clear  # nothing hidden, every process read: clear even without capabilities


# -- this machine's own /proc (read only): the kernel's permission checks, not the fake's ----------------------

LOOK = ("import json, sys; from pathlib import Path; from hotplugd_sysfs.sysfs import SysfsIO; "
        "from hotplugd_sysfs.daxusers import device_users; u = device_users(SysfsIO(), Path('/proc'), 'dax9.9'); "
        "print(json.dumps({'pids': [x.pid for x in u.uninspected], 'what': [x.what for x in u.uninspected], "
        "'uids': [x.uid for x in u.uninspected], 'missing': u.missing, 'hidden': u.hidden}))")


def look_with(caps: str) -> dict:
    """device_users in a child run as root with only ``caps`` (setpriv: bounding and inheritable sets)."""
    if os.geteuid() != 0 or shutil.which("setpriv") is None:
        pytest.skip("needs root and setpriv (util-linux)")
    done = subprocess.run(["setpriv", f"--bounding-set=-all{caps}", f"--inh-caps=-all{caps}", "--",
                           sys.executable, "-c", LOOK], capture_output=True, text=True, check=True, timeout=120)
    return json.loads(done.stdout)


@pytest.fixture
def nobody():
    """A process of uid 65534: another user's, as the issue's devdax application."""
    if shutil.which("setpriv") is None:
        pytest.skip("needs setpriv (util-linux)")
    child = subprocess.Popen(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "--", "sleep", "600"])
    try:
        yield child.pid
    finally:
        child.kill()
        child.wait()


def test_root_without_capabilities_cannot_inspect_another_users_process(nobody):
    """As under the shipped unit's empty CapabilityBoundingSet=: EACCES on its maps; it is named, with its uid."""
    seen = look_with("")
    assert nobody in seen["pids"]
    at = seen["pids"].index(nobody)
    assert (seen["what"][at], seen["uids"][at]) == ("maps", 65534)
    assert seen["missing"] == ["CAP_SYS_PTRACE", "CAP_DAC_READ_SEARCH"]


def test_cap_sys_ptrace_alone_reads_maps_but_not_the_fd_directory(nobody):
    seen = look_with(",+sys_ptrace")
    at = seen["pids"].index(nobody)
    assert seen["what"][at] == "fd" and seen["missing"] == ["CAP_DAC_READ_SEARCH"]


def test_the_two_capabilities_the_drop_in_grants_inspect_every_process(nobody):
    seen = look_with(",+sys_ptrace,+dac_read_search")
    assert nobody not in seen["pids"] and seen["missing"] == [] and seen["hidden"] == ""


def test_with_both_capabilities_an_uninspected_process_still_blocks_and_no_grant_is_asked(fake_sysfs, dax):
    dax.add_process(8, uid=1000)
    dax.deny_process(8)  # an LSM's refusal
    dax.mount_proc(hidepid="invisible", caps=PTRACE | DAC)
    found = users(fake_sysfs)
    assert not found.clear and "holds CAP_SYS_PTRACE and CAP_DAC_READ_SEARCH already" in found.describe()


def test_a_process_whose_leader_exited_is_seen_through_a_live_thread(fake_sysfs, dax):
    """/proc/PID/maps and fd of an exited leader are empty while its other threads still map the device."""
    leader = dax.add_process(500, uid=1000)
    (leader / "task/500").mkdir(parents=True)
    thread = leader / "task/501"
    (thread / "fd").mkdir(parents=True)
    (thread / "maps").write_text("7f0000000000-7f0040000000 rw-s 00000000 00:06 123 /dev/dax0.0\n")
    assert users(fake_sysfs).pids == (500,)
    assert not host(fake_sysfs).reconcile()[0].ok
