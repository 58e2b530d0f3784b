"""``systemd/install.py`` into a staging root: units, the drop-in, the default config, udev rules."""

from __future__ import annotations

import stat
import subprocess
import sys
from pathlib import Path

import pytest

from hotplugd_sysfs.udev import find_rules

REPO = Path(__file__).resolve().parents[2]
INSTALL = REPO / "systemd" / "install.py"
HOTPLUGD = Path(sys.executable).with_name("hotplugd")

UBUNTU_RULES = """\
# On Hyper-V and Xen Virtual Machines we want to add memory and cpus as soon as they appear
ATTR{[dmi/id]sys_vendor}=="Microsoft Corporation", ATTR{[dmi/id]product_name}=="Virtual Machine", GOTO="vm_hotadd_apply"
GOTO="vm_hotadd_end"
LABEL="vm_hotadd_apply"
# Memory hotadd request
SUBSYSTEM=="memory", ACTION=="add", DEVPATH=="/devices/system/memory/memory*[0-9]", \\
  TEST=="/sys$devpath/state", ATTR{state}="online"
# CPU hotadd request
SUBSYSTEM=="cpu", ACTION=="add", DEVPATH=="/devices/system/cpu/cpu[0-9]*", TEST=="/sys$devpath/online", ATTR{online}="1"
LABEL="vm_hotadd_end"
"""
OPERATOR_RULE = 'SUBSYSTEM=="memory", ACTION=="add", ATTR{state}="online_movable"\n'


def install(root: Path, *args: str) -> str:
    # Any python3 works (standard library only): run it with the system's, not the venv's.
    python = "/usr/bin/python3" if Path("/usr/bin/python3").exists() else sys.executable
    done = subprocess.run([python, str(INSTALL), "--destdir", str(root), *args],
                          capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    return done.stdout


def udev_dirs(root: Path) -> list[Path]:
    return [root / d for d in ("etc/udev/rules.d", "run/udev/rules.d", "usr/lib/udev/rules.d", "lib/udev/rules.d")]


def test_units_are_copied_unchanged_with_an_execstart_dropin(tmp_path: Path) -> None:
    install(tmp_path, "--exec", "/opt/hotplugd/bin/hotplugd")
    units = tmp_path / "etc/systemd/system"
    for name in ("hotplugd.service", "hotplugd.socket"):
        assert (units / name).read_text() == (REPO / "systemd" / name).read_text()
    dropin = (units / "hotplugd.service.d/10-exec.conf").read_text()
    assert "[Service]\nExecStart=\nExecStart=/opt/hotplugd/bin/hotplugd run --config /etc/hotplugd/hotplugd.toml\n" in dropin
    assert (tmp_path / "usr/share/doc/hotplugd/install.md").is_file()


def test_the_shipped_path_needs_no_dropin_and_a_stale_one_goes(tmp_path: Path) -> None:
    install(tmp_path, "--exec", "/opt/hotplugd/bin/hotplugd")
    install(tmp_path)
    assert not (tmp_path / "etc/systemd/system/hotplugd.service.d/10-exec.conf").exists()


def test_the_default_config_uses_sysfs_is_root_only_writable_and_valid(tmp_path: Path) -> None:
    install(tmp_path)
    config = tmp_path / "etc/hotplugd/hotplugd.toml"
    assert stat.S_IMODE(config.stat().st_mode) == 0o644
    assert 'backend = "sysfs"' in config.read_text().splitlines()
    done = subprocess.run([str(HOTPLUGD), "check-config", "--config", str(config)],
                          capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    assert "OK (backend sysfs)" in done.stdout


def test_an_existing_config_is_never_overwritten(tmp_path: Path) -> None:
    config = tmp_path / "etc/hotplugd/hotplugd.toml"
    config.parent.mkdir(parents=True)
    config.write_text('backend = "sysfs"\nlog_level = "debug"\n')
    out = install(tmp_path)
    assert config.read_text() == 'backend = "sysfs"\nlog_level = "debug"\n'
    assert f"kept {config}" in out


def test_a_distro_memory_rule_is_masked_and_the_rest_of_its_file_kept(tmp_path: Path) -> None:
    vendor = tmp_path / "usr/lib/udev/rules.d"
    vendor.mkdir(parents=True)
    (vendor / "40-vm-hotadd.rules").write_text(UBUNTU_RULES)
    assert len(find_rules(udev_dirs(tmp_path))) == 1
    out = install(tmp_path)
    override = tmp_path / "etc/udev/rules.d/40-vm-hotadd.rules"
    text = override.read_text()
    assert "1 rule disabled" in out
    assert find_rules(udev_dirs(tmp_path)) == []  # udev now reads the copy, which onlines nothing
    # The continuation line went with its rule; the CPU rule and the labels stay active.
    active = [line for line in text.splitlines() if not line.startswith("#")]
    assert not any("memory" in line or "TEST==" in line and "state" in line for line in active)
    assert any(line.startswith('SUBSYSTEM=="cpu"') for line in active)
    assert 'LABEL="vm_hotadd_apply"' in active and 'LABEL="vm_hotadd_end"' in active


def test_the_operators_own_rule_is_reported_not_touched(tmp_path: Path) -> None:
    own = tmp_path / "etc/udev/rules.d"
    own.mkdir(parents=True)
    (own / "99-mine.rules").write_text(OPERATOR_RULE)
    out = install(tmp_path)
    assert (own / "99-mine.rules").read_text() == OPERATOR_RULE
    assert "left alone" in out and "99-mine.rules" in out


@pytest.mark.parametrize("bad", [["--exec", "hotplugd"]])
def test_a_relative_program_path_is_refused(tmp_path: Path, bad: list[str]) -> None:
    done = subprocess.run([sys.executable, str(INSTALL), "--destdir", str(tmp_path), *bad],
                          capture_output=True, text=True, check=False)
    assert done.returncode == 2 and "absolute path" in done.stderr
    assert not (tmp_path / "etc").exists()
