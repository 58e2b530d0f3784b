"""``hotplugd check``: the configured backend's conflicts, exit 0 when none and 1 when some."""

from __future__ import annotations

import io
import json
from pathlib import Path

from hotplugd.commands.check import check
from hotplugd.commands.cli import main
from hotplugd.config import from_mapping
from hotplugd.plugin.hooks import Hooks
from hotplugd.plugin.manager import make_manager
from hotplugd_sysfs import SysfsBackend

SAMPLES = Path(__file__).parent / "samples"


def write_config(fake, tmp_path, **extra) -> str:
    table = {**fake.options(), **extra}
    lines = ['backend = "sysfs"', "[plugins.sysfs]"]
    lines += [f"{key} = {json.dumps(value)}" for key, value in table.items()]
    path = tmp_path / "hotplugd.toml"
    path.write_text("\n".join(lines) + "\n")
    path.chmod(0o644)
    return str(path)


def test_clean_host_exits_0(fake_sysfs, tmp_path, capsys):
    assert main(["check", "--config", write_config(fake_sysfs, tmp_path)]) == 0
    assert "no conflicts" in capsys.readouterr().out


def test_conflicts_are_listed_and_exit_1(fake_sysfs, tmp_path, capsys):
    fake_sysfs.set_param("memmap_on_memory", "Y")
    rules = fake_sysfs.add_udev_rule("40-vm-hotadd.rules", (SAMPLES / "40-vm-hotadd.rules").read_text(), where="lib")
    assert main(["check", "--config", write_config(fake_sysfs, tmp_path)]) == 1
    out = capsys.readouterr().out
    assert "2 conflicts (backend sysfs):" in out
    assert "memmap_on_memory=Y" in out and f"{rules}:8" in out


def test_the_kernels_auto_online_draws_no_advice_to_turn_it_off(fake_sysfs, tmp_path, capsys):
    """A udev rule is still a conflict; the kernel onlining by itself is the plan's to judge, never a
    reason to tell the user to switch off the fastest onliner the host has."""
    fake_sysfs.set_auto_online("online")
    fake_sysfs.set_cmdline("root=/dev/vda memhp_default_state=online")
    rules = fake_sysfs.add_udev_rule("40-vm-hotadd.rules", (SAMPLES / "40-vm-hotadd.rules").read_text(), where="lib")
    assert main(["check", "--config", write_config(fake_sysfs, tmp_path)]) == 1
    out = capsys.readouterr().out
    assert f"{rules}:8" in out
    assert "write 'offline'" not in out and "memhp_default_state=offline" not in out


def test_an_invalid_table_is_a_config_error(fake_sysfs, tmp_path, capsys):
    assert main(["check", "--config", write_config(fake_sysfs, tmp_path, concurrency=0)]) == 78
    assert "plugins.sysfs.concurrency" in capsys.readouterr().err


def test_check_never_writes(fake_sysfs):
    fake_sysfs.add_blocks(range(3))
    out = io.StringIO()
    config = from_mapping({"backend": "sysfs", "plugins": {"sysfs": fake_sysfs.options()}})
    hooks = Hooks(make_manager(load_entry_points=False, environ={}))
    assert check(config, hooks, SysfsBackend.from_options(fake_sysfs.options(), io=fake_sysfs.io), out) == 0
    assert fake_sysfs.writes == [] and fake_sysfs.state(0) == "offline"
    assert fake_sysfs.knob_writes == [] and fake_sysfs.knob("auto_online_blocks") == "offline"
    printed = out.getvalue()
    assert "plan (host): the kernel onlines" in printed
    assert "auto_online_blocks = offline -> online" in printed
    assert "online_policy = contig-zones (as the plan wants)" in printed
