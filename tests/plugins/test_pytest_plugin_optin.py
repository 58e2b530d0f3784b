"""hotplugd's pytest plugin loads only where asked (``-p hotplugd.testing.pytest_plugin``), never into every run."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import hotplugd


def fixtures(where: Path, *args: str) -> str:
    (where / "test_nothing.py").write_text("def test_nothing():\n    pass\n")
    # hotplugd where this run imports it from (a venv, the Debian package, or the package build's tree)
    env = {**os.environ, "PYTHONPATH": str(Path(hotplugd.__file__).resolve().parents[1])}
    done = subprocess.run([sys.executable, "-m", "pytest", "--fixtures", "-p", "no:cacheprovider", *args],
                          cwd=where, env=env, capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def test_a_pytest_run_elsewhere_does_not_load_it(tmp_path: Path) -> None:
    assert "make_daemon" not in fixtures(tmp_path)


def test_it_loads_with_dash_p(tmp_path: Path) -> None:
    assert "make_daemon" in fixtures(tmp_path, "-p", "hotplugd.testing.pytest_plugin")
