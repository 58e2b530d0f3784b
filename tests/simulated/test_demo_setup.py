"""``scripts/demo`` installs only what the demo needs; ``scripts/test`` (plain ``scripts/setup``) everything.

Run from a copy of the scripts in a checkout path with a space, against a stub ``.venv`` whose
``python`` records each pip command: no network, no real virtualenv.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
STUB = """#!/bin/sh
echo "python $*" >> "$(dirname "$0")/../calls"
"""
HOTPLUGD = """#!/bin/sh
echo "hotplugd $*" >> "$(dirname "$0")/../calls"
"""


@pytest.fixture
def checkout(tmp_path: Path) -> Path:
    root = tmp_path / "a checkout path"
    (root / "scripts").mkdir(parents=True)
    for name in ("setup", "demo"):
        shutil.copy2(ROOT / "scripts" / name, root / "scripts" / name)
    shutil.copy2(ROOT / "pyproject.toml", root / "pyproject.toml")
    old = time.time() - 60
    os.utime(root / "pyproject.toml", (old, old))
    bin_dir = root / ".venv" / "bin"
    bin_dir.mkdir(parents=True)
    for name, text in (("python", STUB), ("hotplugd", HOTPLUGD)):
        (bin_dir / name).write_text(text)
        (bin_dir / name).chmod(0o755)
    return root


def calls(root: Path) -> list[str]:
    path = root / ".venv" / "calls"
    return path.read_text().splitlines() if path.exists() else []


def test_the_demo_installs_hotplugd_without_the_test_extras(checkout):
    subprocess.run([str(checkout / "scripts" / "demo"), "--kernel", "anolis"], cwd="/", check=True, timeout=60)
    installs = [c for c in calls(checkout) if " -m pip install " in c and "--upgrade pip" not in c]
    assert len(installs) == 1 and installs[0].endswith("-e .")  # not .[test]: no matplotlib, hypothesis, linter
    assert calls(checkout)[-1] == "hotplugd simulate --kernel anolis"
    subprocess.run([str(checkout / "scripts" / "demo")], cwd="/", check=True, timeout=60)
    assert sum(" -m pip install " in c for c in calls(checkout)) == 2  # set up once: the second demo installs nothing


def test_plain_setup_installs_the_test_extras_even_after_the_demo(checkout):
    subprocess.run([str(checkout / "scripts" / "setup"), "--demo"], check=True, timeout=60)
    subprocess.run([str(checkout / "scripts" / "setup")], check=True, timeout=60)
    installs = [c for c in calls(checkout) if " -m pip install " in c and "--upgrade pip" not in c]
    specs = [i.rsplit(" ", 1)[1] for i in installs]
    assert specs[0] == "." and specs[1].startswith(".[test")  # the test extras (and what else scripts/test needs)
    subprocess.run([str(checkout / "scripts" / "setup"), "--demo"], check=True, timeout=60)
    assert len([c for c in calls(checkout) if "-e " in c]) == 2  # the full set-up serves the demo too


def test_pips_chatter_stays_out_of_the_demos_screen_unless_the_install_fails(checkout):
    python = checkout / ".venv" / "bin" / "python"
    python.write_text(STUB + 'echo "WARNING: pip chatter" >&2\n')
    shown = subprocess.run([str(checkout / "scripts" / "demo")], capture_output=True, text=True, check=True, timeout=60)
    assert "pip chatter" not in shown.stdout + shown.stderr
    assert "pip chatter" in (checkout / ".venv" / "setup.log").read_text()
    (checkout / ".venv" / ".hotplugd-setup-demo").unlink()
    python.write_text(STUB + 'echo "ERROR: no such package" >&2\nexit 1\n')
    failed = subprocess.run([str(checkout / "scripts" / "demo")], capture_output=True, text=True, timeout=60)
    assert failed.returncode == 1 and "ERROR: no such package" in failed.stderr
    assert "hotplugd simulate" not in calls(checkout)[-1]  # the demo did not run on a failed install
