"""Ruff's rules in pyproject.toml ([tool.ruff]) hold on the whole tree, and they can fail."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def ruff_check(cwd: Path) -> subprocess.CompletedProcess[str]:
    """``ruff check`` as CI runs it (ruff comes with the test extras: ``pip install -e '.[test]'``)."""
    return subprocess.run([sys.executable, "-m", "ruff", "check", "--no-cache", "--output-format", "concise", "."],
                          cwd=cwd, capture_output=True, text=True, timeout=300)


def test_the_tree_has_no_finding():
    result = ruff_check(ROOT)
    assert result.returncode == 0, result.stdout + result.stderr


def test_a_planted_finding_fails_the_check(tmp_path):
    (tmp_path / "pyproject.toml").write_text((ROOT / "pyproject.toml").read_text())
    long = "x" * 130
    (tmp_path / "planted.py").write_text(f"import sys\nimport os\n\nVALUE = '{long}'\nprint(os, sys)\n")
    result = ruff_check(tmp_path)
    assert result.returncode == 1
    assert "planted.py:1:1: I001" in result.stdout and "planted.py:4:121: E501" in result.stdout
