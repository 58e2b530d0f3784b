"""``systemd/install.py`` into a staging root (units, drop-in, default config, udev rules), and ``--uninstall``."""

from __future__ import annotations

import importlib.util
import json
import stat
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

from hotplugd.commands.restore import restore_order
from hotplugd_sysfs.testing.fakesysfs import FakeSysfs
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


#: Where the staged hotplugd is (``--exec``): install.py asks it what the plugins install.
STAGED = "/opt/hotplugd/bin/hotplugd"


def stage_hotplugd(root: Path) -> Path:
    """``root``/opt/hotplugd/bin/hotplugd: the hotplugd under test, staged where ``--exec`` names it."""
    path = root / STAGED.lstrip("/")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f'#!/bin/sh\nexec {HOTPLUGD} "$@"\n')
    path.chmod(0o755)
    return path


def install(root: Path, *args: str) -> str:
    """install.py into ``root`` for the hotplugd staged there, whose plugins say what they install."""
    # Any python3 works (standard library only): run it with the system's, not the venv's.
    python = "/usr/bin/python3" if Path("/usr/bin/python3").exists() else sys.executable
    stage_hotplugd(root)
    program = [] if "--exec" in args else ["--exec", STAGED]
    done = subprocess.run([python, str(INSTALL), "--destdir", str(root), *program, *args],
                          capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def udev_dirs(root: Path) -> list[Path]:
    return [root / d for d in ("etc/udev/rules.d", "run/udev/rules.d", "usr/lib/udev/rules.d", "lib/udev/rules.d")]


def test_units_are_copied_unchanged_with_an_execstart_dropin(tmp_path: Path) -> None:
    install(tmp_path, "--exec", "/opt/hotplugd/bin/hotplugd")
    units = tmp_path / "etc/systemd/system"
    for name in ("hotplugd.service", "hotplugd.socket"):
        assert (units / name).read_text() == (REPO / "systemd" / name).read_text()
    dropin = (units / "hotplugd.service.d/10-exec.conf").read_text()
    assert ("[Service]\nExecStart=\n"
            "ExecStart=/opt/hotplugd/bin/hotplugd run --config /etc/hotplugd/hotplugd.toml\n") in dropin
    assert (tmp_path / "usr/share/doc/hotplugd/install.md").is_file()


def test_the_shipped_path_needs_no_dropin_and_a_stale_one_goes(tmp_path: Path) -> None:
    install(tmp_path)
    assert (tmp_path / "etc/systemd/system/hotplugd.service.d/10-exec.conf").exists()
    # /usr/bin/hotplugd is the Debian package's, which installs its units itself: the step alone here.
    load_install().install_units(tmp_path, "/etc/systemd/system", "/usr/bin/hotplugd")
    assert not (tmp_path / "etc/systemd/system/hotplugd.service.d/10-exec.conf").exists()


def test_a_program_that_cannot_be_asked_is_refused_before_anything_is_written(tmp_path: Path) -> None:
    """The plugins of the hotplugd the units run say what they need installed: without it, nothing is."""
    done = subprocess.run([sys.executable, str(INSTALL), "--destdir", str(tmp_path), "--exec",
                           "/opt/nowhere/bin/hotplugd"], capture_output=True, text=True, check=False)
    assert done.returncode == 2 and "--exec /opt/nowhere/bin/hotplugd: no such program" in done.stderr
    assert "Traceback" not in done.stderr and not (tmp_path / "etc").exists()


def test_the_plugins_files_come_from_the_program_it_installs_for(tmp_path: Path) -> None:
    """install.py loads no plugin file: it runs `hotplugd install-files` and says each step the plugins gave."""
    out = install(tmp_path)
    assert f"$ {tmp_path}{STAGED} install-files --root {tmp_path} --unit-dir /etc/systemd/system" in out
    assert "install: no distro udev rule onlines memory" in out
    assert "load_reader" not in INSTALL.read_text() and "hotplugd_sysfs" not in INSTALL.read_text()


DAX_DROPIN = "etc/systemd/system/hotplugd.service.d/20-dax.conf"
DAX_RULE = '\n[[plugins.sysfs.dax]]\ndevice = "dax0.0"\n'


def test_the_dax_dropin_comes_only_with_dax_rules_or_dax(tmp_path: Path) -> None:
    """The capabilities that prove a dax device unused are granted only where hotplugd converts devices."""
    install(tmp_path)
    assert not (tmp_path / DAX_DROPIN).exists()  # the default config names no dax device: no capability
    config = tmp_path / "etc/hotplugd/hotplugd.toml"
    config.write_text(config.read_text() + DAX_RULE)
    out = install(tmp_path)
    assert (tmp_path / DAX_DROPIN).read_text() == (REPO / "systemd/hotplugd-dax.conf").read_text()
    assert "CAP_SYS_PTRACE and CAP_DAC_READ_SEARCH" in out
    config.write_text(config.read_text().replace(DAX_RULE, ""))
    assert "removed" in install(tmp_path) and not (tmp_path / DAX_DROPIN).exists()  # rules gone: so is the grant
    install(tmp_path, "--dax")  # devices to come: granted ahead
    assert (tmp_path / DAX_DROPIN).exists()
    install(tmp_path)
    install(tmp_path, "--with", "dax")  # the same, by the plugin's feature name
    assert (tmp_path / DAX_DROPIN).exists()
    uninstall(tmp_path)
    assert not (tmp_path / DAX_DROPIN).exists() and not (tmp_path / DAX_DROPIN).parent.exists()


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


def test_an_invalid_existing_config_is_named_and_fails_the_install(tmp_path: Path) -> None:
    """The plugins are asked under the config the service will run: one it would refuse fails here first."""
    config = tmp_path / "etc/hotplugd/hotplugd.toml"
    config.parent.mkdir(parents=True)
    config.write_text('backend = "sysfs"\n[plugins.sysfs]\nconcurrency = 0\n')
    stage_hotplugd(tmp_path)
    done = subprocess.run([sys.executable, str(INSTALL), "--destdir", str(tmp_path), "--exec", STAGED],
                          capture_output=True, text=True, check=False)
    assert done.returncode == 1 and "plugins.sysfs.concurrency" in done.stdout and "(exit 78)" in done.stdout
    assert "Traceback" not in done.stdout + done.stderr


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


def test_no_udev_leaves_the_distros_rules_alone(tmp_path: Path) -> None:
    vendor = tmp_path / "usr/lib/udev/rules.d"
    vendor.mkdir(parents=True)
    (vendor / "40-vm-hotadd.rules").write_text(UBUNTU_RULES)
    out = install(tmp_path, "--no-udev")
    assert not (tmp_path / "etc/udev/rules.d").exists() and "masked" not in out
    assert len(find_rules(udev_dirs(tmp_path))) == 1


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


# -- uninstall: the kernel's knobs back as hotplugd found them ------------------------------------

FOUND = {"auto_online_blocks": "offline", "online_policy": "contig-zones", "auto_movable_ratio": "301"}


def load_install() -> ModuleType:
    spec = importlib.util.spec_from_file_location("hotplugd_install_script", INSTALL)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def uninstall(root: Path, *args: str, status: int = 0) -> str:
    python = "/usr/bin/python3" if Path("/usr/bin/python3").exists() else sys.executable
    done = subprocess.run([python, str(INSTALL), "--destdir", str(root), "--uninstall", "--exec", str(HOTPLUGD), *args],
                          capture_output=True, text=True, check=False)
    assert done.returncode == status, done.stdout + done.stderr
    assert "Traceback" not in done.stderr
    return done.stdout


def as_hotplugd_left_it(root: Path, record: object, state_directory: str = "var/lib/hotplugd") -> FakeSysfs:
    """A staged host after hotplugd ran: the knobs as it set them, the record of those it found."""
    fake = FakeSysfs(root)  # <root>/sys: the default --sysfs-root under --destdir
    fake.set_auto_online("online")
    fake.set_param("online_policy", "auto-movable")
    fake.set_param("auto_movable_ratio", "150")
    path = root / state_directory / "kernel-knobs.json"
    path.parent.mkdir(parents=True)
    path.write_text(record if isinstance(record, str) else json.dumps(record))
    return fake


def test_uninstall_restores_the_knobs_and_removes_what_install_wrote(tmp_path: Path) -> None:
    vendor = tmp_path / "usr/lib/udev/rules.d"
    vendor.mkdir(parents=True)
    (vendor / "40-vm-hotadd.rules").write_text(UBUNTU_RULES)
    install(tmp_path, "--dax")
    fake = as_hotplugd_left_it(tmp_path, {"host": FOUND, "recorded_at": "2026-12-01T23:00:00+00:00"})
    out = uninstall(tmp_path)
    assert {name: fake.knob(name) for name in FOUND} == FOUND
    assert not (tmp_path / "var/lib/hotplugd").exists()  # the record was all it held: no file left behind
    units = tmp_path / "etc/systemd/system"
    assert not (units / "hotplugd.service").exists() and not (units / "hotplugd.service.d").exists()
    assert not (tmp_path / "usr/share/doc/hotplugd").exists()
    assert len(find_rules(udev_dirs(tmp_path))) == 1  # the mask is gone: the distro's rule applies again
    assert (tmp_path / "etc/hotplugd/hotplugd.toml").exists() and "kept" in out
    assert "restored auto_online_blocks = 'offline'" in out and "hotplugd restore-knobs" in out


def test_the_knobs_turning_auto_online_off_go_first_and_on_last() -> None:
    order = restore_order  # hotplugd restore-knobs's, which install.py --uninstall runs
    assert order({"online_policy": "x", "auto_online_blocks": "offline", "auto_movable_ratio": "1"}) == [
        "auto_online_blocks", "online_policy", "auto_movable_ratio"]
    assert order({"auto_online_blocks": "online", "online_policy": "auto-movable"}) == [
        "online_policy", "auto_online_blocks"]


def test_without_a_record_nothing_is_restored_and_it_says_so(tmp_path: Path) -> None:
    fake = FakeSysfs(tmp_path)
    fake.set_auto_online("online_movable")
    out = uninstall(tmp_path)
    assert "nothing to restore" in out and fake.knob("auto_online_blocks") == "online_movable"


def test_a_knob_this_kernel_lacks_is_skipped_and_the_rest_restored(tmp_path: Path) -> None:
    fake = as_hotplugd_left_it(tmp_path, {"host": {**FOUND, "parallel_hotplug_ratio": "0"}})
    out = uninstall(tmp_path)
    assert "skipped parallel_hotplug_ratio" in out and fake.knob("online_policy") == "contig-zones"


def test_a_knob_that_cannot_be_written_fails_naming_it_and_keeps_the_record(tmp_path: Path) -> None:
    fake = as_hotplugd_left_it(tmp_path, {"host": FOUND})
    policy = fake.knob_file("online_policy")
    policy.unlink()
    policy.mkdir()  # any write fails (EISDIR)
    out = uninstall(tmp_path, status=1)
    assert f"cannot write 'contig-zones' to {policy}: EISDIR" in out
    assert fake.knob("auto_online_blocks") == "offline"  # the others are restored all the same
    assert (tmp_path / "var/lib/hotplugd/kernel-knobs.json").exists()


@pytest.mark.parametrize("record", ["{not json", json.dumps(["host"]), json.dumps({"host": "offline"})])
def test_a_broken_record_is_named_not_a_traceback(tmp_path: Path, record: str) -> None:
    fake = as_hotplugd_left_it(tmp_path, record)
    out = uninstall(tmp_path, status=1)
    assert "kernel-knobs.json" in out and "by hand" in out
    assert fake.knob("auto_online_blocks") == "online"


def test_the_record_is_read_from_the_configs_state_directory_and_guests_are_left_alone(tmp_path: Path) -> None:
    install(tmp_path)
    config = tmp_path / "etc/hotplugd/hotplugd.toml"
    config.write_text('state_directory = "/srv/hotplugd"\n' + config.read_text().replace("state_directory =", "#"))
    fake = as_hotplugd_left_it(tmp_path, {"host": FOUND, "vm1": {"auto_online_blocks": "offline"}},
                               state_directory="srv/hotplugd")
    out = uninstall(tmp_path, "--sysfs-root", str(fake.sys))
    assert fake.knob("auto_online_blocks") == "offline" and "left alone" in out and "'vm1'" in out


def test_sysfs_root_goes_with_uninstall(tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, str(INSTALL), "--destdir", str(tmp_path), "--sysfs-root", "/sys"],
                          capture_output=True, text=True, check=False)
    assert done.returncode == 2 and "--uninstall" in done.stderr


# -- a program the unit cannot run ---------------------------------------------------------------


@pytest.mark.parametrize("where", ["/tmp/co/.venv/bin/hotplugd", "/var/tmp/hotplugd", "/home/me/.local/bin/hotplugd",
                                   "/root/hotplugd/.venv/bin/hotplugd", "/run/user/1000/hotplugd"])
def test_a_program_under_a_path_the_unit_hides_is_refused_with_the_reason(tmp_path: Path, where: str) -> None:
    done = subprocess.run([sys.executable, str(INSTALL), "--destdir", str(tmp_path), "--exec", where],
                          capture_output=True, text=True, check=False)
    assert done.returncode == 2 and "203/EXEC" in done.stderr and "Traceback" not in done.stderr
    hidden_by = "PrivateTmp=yes" if where.startswith(("/tmp/", "/var/tmp/")) else "ProtectHome=yes"
    assert f"--exec {where}" in done.stderr and hidden_by in done.stderr
    assert not (tmp_path / "etc").exists()


def test_a_script_whose_interpreter_the_unit_hides_is_refused(tmp_path: Path) -> None:
    """A venv under /opt whose python is a symlink into /root (pyenv): the unit cannot run it either."""
    venv = tmp_path / "opt" / "bin"
    venv.mkdir(parents=True)
    (venv / "python").symlink_to("/root/.pyenv/versions/3.11.7/bin/python3.11")
    (venv / "hotplugd").write_text(f"#!{venv / 'python'}\n")
    reason = load_install().hidden_program(str(venv / "hotplugd"), "[Service]\nProtectHome=yes\n")
    assert reason is not None and "its interpreter /root/.pyenv" in reason and "ProtectHome=yes" in reason


def test_the_hiding_follows_the_unit() -> None:
    hidden = load_install().hidden_by_unit
    assert set(hidden("[Service]\nPrivateTmp=yes\nProtectHome=read-only\n")) == {"/tmp", "/var/tmp"}
    assert set(hidden("[Service]\n#PrivateTmp=yes\nProtectHome=tmpfs\n")) == {"/home", "/root", "/run/user"}
