"""One broken built-in plugin never stops the other two; only the backend the config chooses is fatal.

Each built-in is broken in turn the way a distro update would break it: its module
(or, for qga, its dependency ``qemu.qmp``) fails to import.
"""

from __future__ import annotations

import io
import subprocess
import sys
from functools import partial
from pathlib import Path

import anyio
import pytest
from rich.console import Console

from hotplugd.commands.contributed import Session
from hotplugd.config import from_mapping
from hotplugd.errors import EXIT_CONFIG, PluginError
from hotplugd.plugin.manager import DISABLE_ENV, backend_registry, build_backend, make_manager
from hotplugd_sysfs.testing.fakesysfs import FakeSysfs

BUILT_INS = {"simulated": "hotplugd_simulated", "sysfs": "hotplugd_sysfs", "qga": "hotplugd_qga"}
HOTPLUGD = Path(sys.executable).with_name("hotplugd")


def runs_simulated(pm, tmp_path: Path) -> None:
    config = from_mapping({"backend": "simulated", "metrics": {"enabled": False}, "scheduler": {"settle": 0.01},
                           "plugins": {"simulated": {"add_interval": 0}}})
    from hotplugd_simulated.simulate import simulate

    code, _ = simulate(config, partial(Session, pm=pm), progress=False, console=Console(file=io.StringIO()))
    assert code == 0


def runs_sysfs(pm, tmp_path: Path) -> None:
    fake = FakeSysfs(tmp_path / "host")
    fake.add_blocks(range(4))
    backend = build_backend(pm, from_mapping({"backend": "sysfs", "plugins": {"sysfs": fake.options()}}))
    assert sorted(b.index for b in anyio.run(backend.scan).blocks) == [0, 1, 2, 3]


def runs_qga(pm, tmp_path: Path) -> None:
    options = {"guest": [{"name": "vm1", "qga": str(tmp_path / "vm1.qga")}]}
    backend = build_backend(pm, from_mapping({"backend": "qga", "plugins": {"qga": options}}))
    assert "vm1" in repr(backend) or "Qga" in type(backend).__name__


RUNS = {"simulated": runs_simulated, "sysfs": runs_sysfs, "qga": runs_qga}


@pytest.mark.parametrize("broken", sorted(BUILT_INS))
def test_one_broken_built_in_leaves_the_other_two_running(broken, monkeypatch, tmp_path):
    monkeypatch.delenv(DISABLE_ENV, raising=False)
    monkeypatch.setitem(sys.modules, BUILT_INS[broken], None)  # its import now fails
    pm = make_manager()
    assert f"plugin {broken!r}" in pm.failures[broken].args[0]
    assert set(backend_registry(pm).names()) >= set(BUILT_INS) - {broken}
    for name in sorted(set(BUILT_INS) - {broken}):
        RUNS[name](pm, tmp_path)
    with pytest.raises(PluginError, match=f"backend {broken!r} is not available"):
        build_backend(pm, from_mapping({"backend": broken}))


@pytest.fixture
def broken_qemu(tmp_path: Path) -> dict[str, str]:
    """An environment whose ``qemu`` package fails to import, as after a bad distro update."""
    package = tmp_path / "broken" / "qemu"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("raise ImportError('qemu.qmp is broken on this host')\n")
    return {"PYTHONPATH": str(package.parent), "HOTPLUGD_DISABLED_PLUGINS": "", "PATH": "/usr/bin:/bin"}


def test_a_broken_qemu_qmp_does_not_stop_a_host_that_does_not_use_qga(broken_qemu):
    result = subprocess.run([str(HOTPLUGD), "simulate", "--no-progress", "--set", "plugins.simulated.add_interval=0"],
                            env=broken_qemu, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr


def test_a_broken_qemu_qmp_is_fatal_only_for_the_qga_backend(broken_qemu, tmp_path):
    config = tmp_path / "qga.toml"
    config.write_text(f'backend = "qga"\n[[plugins.qga.guest]]\nname = "vm1"\nqga = "{tmp_path}/vm1.qga"\n')
    result = subprocess.run([str(HOTPLUGD), "run", "--config", str(config)], env=broken_qemu,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == EXIT_CONFIG, result.stderr
    assert "qemu.qmp is broken on this host" in result.stderr and "Traceback" not in result.stderr
