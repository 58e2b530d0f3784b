"""Conflict detection: udev rules that online memory, memmap_on_memory; never the kernel's own auto-online."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from hotplugd_sysfs.conflicts import find_conflicts, kernel_conflicts
from hotplugd_sysfs.sysfs import Sysfs
from hotplugd_sysfs.udev import find_rules, logical_lines, rule_files, scan_rules

SAMPLES = Path(__file__).parent / "samples"
#: Ubuntu's 40-vm-hotadd.rules: memory and CPU lines behind a DMI check.
UBUNTU = (SAMPLES / "40-vm-hotadd.rules").read_text()
#: RHEL-style: a SUBSYSTEM guard, then an assignment (continued) that does not name memory itself.
RHEL = (SAMPLES / "40-redhat.rules").read_text()
RUN_STYLE = (SAMPLES / "80-run-echo.rules").read_text()
CHMEM = (SAMPLES / "81-chmem.rules").read_text()
#: Comparisons, other subsystems and comments: no conflict.
HARMLESS = (SAMPLES / "90-harmless.rules").read_text()


def test_ubuntu_rule_found_by_line(tmp_path):
    hits = scan_rules(tmp_path / "40-vm-hotadd.rules", UBUNTU)
    assert [h.line for h in hits] == [8]
    assert 'ATTR{state}="online"' in hits[0].text
    assert str(hits[0]).startswith(f"udev rule {tmp_path}/40-vm-hotadd.rules:8 ")


def test_guarded_rule_with_continuation_found_at_its_first_line(tmp_path):
    hits = scan_rules(tmp_path / "40-redhat.rules", RHEL)
    assert [h.line for h in hits] == [7]  # not the CPU line after the label


def test_run_and_chmem_rules_found(tmp_path):
    assert len(scan_rules(tmp_path / "a.rules", RUN_STYLE)) == 1
    assert len(scan_rules(tmp_path / "b.rules", CHMEM)) == 1


def test_comparisons_other_devices_and_comments_are_not_conflicts(tmp_path):
    assert scan_rules(tmp_path / "c.rules", HARMLESS) == []


def test_logical_lines_join_continuations():
    assert list(logical_lines("A \\\n  B\nC\n")) == [(1, "A B"), (3, "C")]


def test_earlier_directory_masks_later_and_dev_null_masks(tmp_path):
    etc, run, lib = (tmp_path / d for d in ("etc", "run", "lib"))
    for d in (etc, run, lib):
        d.mkdir()
    (lib / "40-vm-hotadd.rules").write_text(UBUNTU)
    (lib / "80-other.rules").write_text(RUN_STYLE)
    (etc / "80-other.rules").write_text("# disabled by the admin\n")
    (run / "40-vm-hotadd.rules").symlink_to(os.devnull)
    assert rule_files([etc, run, lib]) == [run / "40-vm-hotadd.rules", etc / "80-other.rules"]
    assert find_rules([etc, run, lib]) == []
    (run / "40-vm-hotadd.rules").unlink()
    assert [h.path for h in find_rules([etc, run, lib])] == [lib / "40-vm-hotadd.rules"]


def test_missing_directories_are_fine(tmp_path):
    assert find_rules([tmp_path / "nope"]) == []


@pytest.fixture
def sysfs(fake_sysfs):
    return Sysfs(fake_sysfs.sys, fake_sysfs.proc, fake_sysfs.io)


def test_a_clean_host_has_no_conflicts(fake_sysfs, sysfs):
    assert find_conflicts(sysfs, fake_sysfs.options()["udev_rules_dirs"]) == []


@pytest.mark.parametrize("value", ["online", "online_kernel", "online_movable"])
def test_the_kernels_auto_online_is_no_conflict_here(fake_sysfs, sysfs, value):
    """hotplugd sets these knobs itself: the core's plan judges them, not the backend."""
    fake_sysfs.set_auto_online(value)
    fake_sysfs.set_cmdline(f"root=/dev/vda memhp_default_state={value}")
    fake_sysfs.set_param("online_policy", "auto-movable")
    fake_sysfs.set_param("auto_movable_ratio", "150")
    assert find_conflicts(sysfs, fake_sysfs.options()["udev_rules_dirs"]) == []


def test_memmap_on_memory_is_reported(fake_sysfs, sysfs):
    fake_sysfs.set_param("memmap_on_memory", "Y")
    [message] = kernel_conflicts(sysfs)
    assert "memmap_on_memory=Y" in message


def test_a_kernel_without_the_parameters_is_fine(fake_sysfs, sysfs):
    for name in ("online_policy", "auto_movable_ratio", "memmap_on_memory"):
        (fake_sysfs.params / name).unlink()
    assert kernel_conflicts(sysfs) == []


def test_everything_together_kernel_first_then_rules(fake_sysfs, sysfs):
    fake_sysfs.set_auto_online("online")
    fake_sysfs.set_param("memmap_on_memory", "Y")
    fake_sysfs.add_udev_rule("40-vm-hotadd.rules", UBUNTU, where="lib")
    messages = find_conflicts(sysfs, fake_sysfs.options()["udev_rules_dirs"])
    assert len(messages) == 2
    assert "memmap_on_memory" in messages[0] and "40-vm-hotadd.rules:8" in messages[1]
