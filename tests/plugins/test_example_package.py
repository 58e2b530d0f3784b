"""The example third-party plugin, installed with pip into a fresh virtualenv, as a user would.

One virtualenv per module: hotplugd (from a copy of this source tree, not
editable) and ``examples/hotplugd-example-backend`` with its test extras,
dependencies from PyPI through pip's cache. Then ``hotplugd plugins``, a real
``hotplugd run`` on the example's backend, and the example's own test suite,
all with that virtualenv's executables.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from hotplugd import __version__
from hotplugd.model import EHWPOISON

from .fakes import rows

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "hotplugd-example-backend"
#: Bounds for the subprocesses (failure guards, not measurements).
INSTALL_TIMEOUT = 240
RUN_TIMEOUT = 60
IGNORE = shutil.ignore_patterns("__pycache__", "*.egg-info", "build", ".*")


def _copy_source(dest: Path) -> Path:
    """What an sdist of hotplugd holds, so pip builds outside the shared working tree."""
    dest.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, dest / name)
    for name in ("hotplugd", "plugins"):
        shutil.copytree(ROOT / name, dest / name, ignore=IGNORE)
    return dest


def _run(cmd: list[str | Path], timeout: float = RUN_TIMEOUT, **kwargs) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1"}
    env.pop("COLUMNS", None)
    env.pop("HOTPLUGD_DISABLED_PLUGINS", None)
    env.pop("PYTHONPATH", None)
    return subprocess.run([str(c) for c in cmd], capture_output=True, text=True, timeout=timeout, env=env,
                          check=False, **kwargs)


@pytest.fixture(scope="module")
def venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh virtualenv with hotplugd and the example plugin installed by pip."""
    base = tmp_path_factory.mktemp("example-venv")
    env_dir = base / "venv"
    made = _run([sys.executable, "-m", "venv", env_dir], timeout=INSTALL_TIMEOUT)
    assert made.returncode == 0, made.stderr
    source = _copy_source(base / "hotplugd-src")
    example = shutil.copytree(EXAMPLE, base / "example", ignore=IGNORE)
    # One resolution: the local hotplugd satisfies the example's `hotplugd>=0.1`.
    pip = _run([env_dir / "bin" / "python", "-m", "pip", "install", "-q", source, f"{example}[test]"],
               timeout=INSTALL_TIMEOUT)
    assert pip.returncode == 0, pip.stdout + pip.stderr
    return env_dir


def _host_file(path: Path) -> Path:
    path.write_text(json.dumps({
        "block_size": "128MiB",
        "nodes": {"0": 2, "1": 2},
        "blocks": [{"index": 0, "node": 0, "state": "online", "zone": "Normal"},
                   {"index": 1, "node": 0}, {"index": 2, "node": 0}, {"index": 3, "node": 0, "fault": "EHWPOISON"}],
        "hotplug": [{"index": 8, "node": 1}, {"index": 9, "node": 1, "fault": "EBUSY"}, {"index": 10, "node": 1}],
    }))
    return path


def _config(path: Path, host: Path) -> Path:
    path.write_text(f"""
backend = "ledger"
log_format = "json"

[metrics]
enabled = false

[plugins.ledger]
host = "{host}"
kernel_first = "256MiB"
""")
    return path


def test_hotplugd_plugins_lists_the_example_plugin_and_its_backend(venv: Path):
    out = _run([venv / "bin" / "hotplugd", "plugins"])
    assert out.returncode == 0, out.stderr
    plugins = rows(out.stdout, "plugins")
    assert plugins["ledger"][:2] == ["hotplugd-example-backend 0.1.0", "hotplugd_ledger.plugin"]
    assert set(plugins["ledger"][2].split()) == {
        "hotplugd_check_config", "hotplugd_choose_zone", "hotplugd_register_backends"}
    assert plugins["simulated"][0] == f"hotplugd {__version__}"
    summary = "a host described by a JSON file, written back as a ledger"
    assert rows(out.stdout, "backends")["ledger"] == ["ledger", summary]


def test_hotplugd_run_onlines_the_example_host_until_sigterm(venv: Path, tmp_path: Path):
    host = _host_file(tmp_path / "host.json")
    config = _config(tmp_path / "hotplugd.toml", host)
    check = _run([venv / "bin" / "hotplugd", "check-config", "--config", config])
    assert check.returncode == 0, check.stderr
    assert "OK (backend ledger)" in check.stdout
    plan = _run([venv / "bin" / "hotplugd", "check", "--config", config])
    assert f"the host described by {host}, written back as a ledger" in plan.stdout, plan.stdout + plan.stderr

    ready = tmp_path / "ready"
    proc = subprocess.Popen([venv / "bin" / "hotplugd", "run", "--config", config, "--ready-file", ready],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + RUN_TIMEOUT
        done = {1, 2, 8, 9, 10}
        while time.monotonic() < deadline and proc.poll() is None:
            blocks = {b["index"]: b for b in json.loads(host.read_text())["blocks"]}
            if done <= {i for i, b in blocks.items() if b.get("state") == "online"}:
                break
            time.sleep(0.05)
        assert proc.poll() is None, proc.communicate()[1]
        assert ready.read_text().strip() == str(proc.pid)
    finally:
        proc.send_signal(signal.SIGTERM)
        _, stderr = proc.communicate(timeout=RUN_TIMEOUT)
    assert proc.returncode == 0, stderr
    blocks = {b["index"]: (b["state"], b.get("zone")) for b in json.loads(host.read_text())["blocks"]}
    # kernel_first = 256MiB: node 0 had 128 MiB online, so one more kernel block, then movable;
    # node 1 starts empty: two kernel blocks (8, 9), then movable (10). Block 3 is poisoned.
    assert blocks == {0: ("online", "Normal"), 1: ("online", "Normal"), 2: ("online", "Movable"),
                      3: ("offline", None), 8: ("online", "Normal"), 9: ("online", "Normal"),
                      10: ("online", "Movable")}
    events = [json.loads(line) for line in stderr.splitlines() if line.startswith("{")]
    names = [e["event"] for e in events]
    assert "ready" in names and names[-1] == "stopped"
    failed = [e for e in events if e["event"] == "online_failed"]
    assert [(e["block"], e["outcome"]) for e in failed] == [(3, "permanent")]
    assert failed[0]["errno"] in ("EHWPOISON", EHWPOISON)  # named where Python's errno module knows it


def test_bad_example_config_exits_78_naming_the_key(venv: Path, tmp_path: Path):
    config = tmp_path / "bad.toml"
    config.write_text('backend = "ledger"\n[plugins.ledger]\nhost = "/nonexistent.json"\nkernel_first = "lots"\n')
    out = _run([venv / "bin" / "hotplugd", "check-config", "--config", config])
    assert out.returncode == 78
    assert "plugins.ledger.kernel_first" in out.stderr
    assert "Traceback" not in out.stderr


def test_example_package_own_tests_pass_in_the_fresh_venv(venv: Path, tmp_path: Path):
    example = tmp_path / "example"
    shutil.copytree(EXAMPLE / "tests", example / "tests")
    shutil.copy2(EXAMPLE / "pyproject.toml", example / "pyproject.toml")
    out = _run([venv / "bin" / "python", "-m", "pytest", "-q", "-p", "no:cacheprovider"], cwd=example)
    assert out.returncode == 0, out.stdout + out.stderr
    expected = sum(f.read_text().count("\ndef test_") + f.read_text().count("\nasync def test_")
                   for f in (EXAMPLE / "tests").glob("test_*.py"))
    assert f"{expected} passed" in out.stdout and "skipped" not in out.stdout
