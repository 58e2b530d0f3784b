"""``check`` and ``status`` describe the host they run on; ``run`` never guesses a backend.

Every host here is the fake sysfs tree (:mod:`hotplugd.testing`, the kernel's own layout under a temp
dir), pointed at with ``plugins.sysfs.root``/``proc``/``udev_rules_dirs``: never this machine's /sys.
"""

from __future__ import annotations

import hashlib
import json
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from hotplugd.commands import cli
from hotplugd.commands.cli import main

ROOT = Path(__file__).resolve().parents[2]
REFERENCE = ROOT / "config" / "hotplugd.toml"
HOTPLUGD = Path(sys.executable).with_name("hotplugd")


@pytest.fixture(autouse=True)
def no_installed_config(monkeypatch, tmp_path):
    """An /etc/hotplugd/hotplugd.toml on the machine running the tests must not change what they see."""
    monkeypatch.setattr(cli, "DEFAULT_PATH", tmp_path / "absent.toml")


def tree_flags(fake) -> list[str]:
    """``--set`` flags pointing the sysfs plugin at the fake tree, choosing no backend."""
    options = fake.options()
    return [arg for key, value in options.items() for arg in ("--set", f"plugins.sysfs.{key}={json.dumps(value)}")]


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def snapshot(base: Path) -> dict[str, str]:
    """Every file's content (and every link's target) under ``base``: a write anywhere changes it."""
    out = {}
    for path in sorted(base.rglob("*")):
        if path.is_symlink():
            out[str(path)] = "-> " + str(path.readlink())
        elif path.is_file():
            out[str(path)] = hashlib.sha256(path.read_bytes()).hexdigest()
    return out


def a_real_looking_host(fake) -> None:
    """Two nodes: 1 GiB booted online on node 0, 512 MiB hot-added and still offline on node 1."""
    fake.add_blocks(range(0, 8), node=0, state="online", zones=("Normal",))
    fake.add_node(1, "4-7")
    fake.add_blocks(range(32, 36), node=1)


def test_check_with_no_config_reads_the_host_it_runs_on(fake_sysfs, capsys):
    a_real_looking_host(fake_sysfs)
    assert main(["check", *tree_flags(fake_sysfs)]) == 0
    out = capsys.readouterr().out
    first, *rest = out.splitlines()
    assert first.startswith(f"backend sysfs: this host (its memory under {fake_sysfs.sys})")
    assert "no backend chosen" in first
    assert "plan (host): the kernel onlines" in out and "auto_online_blocks = offline -> online" in out
    assert "nothing else onlines memory on this host" in out and "simulated" not in out


def test_the_reference_config_describes_the_host_too(fake_sysfs, capsys):
    """config/hotplugd.toml chooses no backend: with it, check still reads this host, not a model."""
    assert main(["check", "--config", str(REFERENCE), *tree_flags(fake_sysfs)]) == 0
    assert capsys.readouterr().out.startswith("backend sysfs: this host")


def test_status_with_no_config_shows_the_hosts_blocks(fake_sysfs, capsys):
    a_real_looking_host(fake_sysfs)
    port = closed_port()
    assert main(["status", *tree_flags(fake_sysfs), "--set", f"metrics.port={port}"]) == 3
    out = capsys.readouterr().out
    assert out.startswith(f"backend sysfs: this host (its memory under {fake_sysfs.sys})")
    assert "memory blocks (sysfs backend, read now)" in out
    rows = [line for line in out.splitlines() if line.startswith("│")]
    assert any("0 │ Normal │ online " in row and "│      8 │" in row for row in rows), out
    assert any("1 │ -      │ offline" in row and "│      4 │" in row for row in rows), out
    assert f"daemon not running (no answer on 127.0.0.1:{port})" in out


def test_check_and_status_never_write_the_tree(fake_sysfs, capsys):
    """Through the command line's own file access (not the test seam): every file and link as it was."""
    a_real_looking_host(fake_sysfs)
    fake_sysfs.add_udev_rule("80-mem.rules", 'SUBSYSTEM=="memory", ACTION=="add", ATTR{state}="online"\n')
    before = snapshot(fake_sysfs.base)
    assert main(["check", *tree_flags(fake_sysfs)]) == 1  # the rule is a conflict
    assert main(["status", *tree_flags(fake_sysfs), "--set", f"metrics.port={closed_port()}"]) == 3
    assert main(["check", "--backend", "sysfs", "--set", 'zones.policy="movable"', *tree_flags(fake_sysfs)]) == 1
    capsys.readouterr()
    assert snapshot(fake_sysfs.base) == before
    assert fake_sysfs.knob("auto_online_blocks") == "offline"


def test_a_simulated_host_is_never_called_this_host(fake_sysfs, capsys):
    assert main(["check", "--backend", "simulated"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("backend simulated: a simulated host, not this machine")
    assert "nothing else onlines memory on the simulated host" in out and "this host" not in out


def test_check_refuses_what_run_refuses(fake_sysfs, capsys):
    """Forcing the kernel where the per-node policies cannot be its global knobs: run exits 78, so does check."""
    flags = ["--backend", "sysfs", *tree_flags(fake_sysfs), "--set", 'scheduler.onliner="kernel"',
             "--set", 'zones.nodes.1.policy="movable"']
    assert main(["check", *flags]) == 78
    out = capsys.readouterr().out
    assert "run would refuse (exit 78): scheduler.onliner = \"kernel\" cannot be honoured" in out
    assert "zone policies differ per node" in out
    # And run does refuse it: on the simulated backend whose auto_online_blocks is read-only, the same forced kernel.
    read_only = 'plugins.simulated.read_only_knobs=["auto_online_blocks"]'
    assert main(["check", "--backend", "simulated", "--set", 'scheduler.onliner="kernel"', "--set", read_only]) == 78
    assert main(["run", "--backend", "simulated", "--set", 'scheduler.onliner="kernel"', "--set", read_only,
                 "--set", "metrics.enabled=false", "--set", 'log_format="json"']) == 78
    err = capsys.readouterr().err
    assert "cannot be honoured" in err
    assert err.index('"event": "starting"') < err.index('"event": "stopped"')  # never `stopped` alone


@pytest.mark.skipif(not HOTPLUGD.exists(), reason=f"no {HOTPLUGD} (a package build's tree: it runs installed)")
def test_run_with_no_backend_refuses_naming_both_choices(fake_sysfs, tmp_path):
    """In a subprocess with a deadline: before, this ran a simulated daemon until killed."""
    result = subprocess.run([str(HOTPLUGD), "run", *tree_flags(fake_sysfs), "--set", "metrics.enabled=false",
                             "--ready-file", str(tmp_path / "ready")],
                            capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 78, result.stderr
    assert "no backend chosen" in result.stderr
    assert "--backend sysfs" in result.stderr and "--backend simulated" in result.stderr
    assert not (tmp_path / "ready").exists() and "Traceback" not in result.stderr


def test_check_config_accepts_a_config_without_backend_and_says_what_run_needs(capsys):
    assert main(["check-config", "--config", str(REFERENCE)]) == 0
    assert "no backend chosen: `run` needs --backend sysfs or simulated" in capsys.readouterr().out


def test_check_cannot_vouch_for_guests_it_cannot_reach(tmp_path, capsys):
    pytest.importorskip("qemu.qmp")  # the qga extra (not in the Debian package)
    guest = f'plugins.qga.guest=[{{name="vm1", qga="{tmp_path}/vm1/qga.sock"}}]'
    assert main(["check", "--backend", "qga", "--set", guest, "--set", 'plugins.qga.timeout="1s"']) == 1
    out = capsys.readouterr().out
    assert out.startswith("backend qga: the guests' memory")
    assert "cannot know: guest vm1: its agent does not answer" in out and "no conflicts" not in out


def test_check_with_no_guest_found_says_so(tmp_path, capsys):
    pytest.importorskip("qemu.qmp")  # the qga extra (not in the Debian package)
    dirs = f'plugins.qga.guest_dirs=[{{glob="{tmp_path}/vms/*", qga="qga.sock"}}]'
    assert main(["check", "--backend", "qga", "--set", dirs]) == 1
    assert "cannot know: no guest configured or found" in capsys.readouterr().out
