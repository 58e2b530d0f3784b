"""The layout is a checked rule: import-linter's contracts in pyproject.toml hold."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def lint_imports(tree: Path) -> subprocess.CompletedProcess[str]:
    """``lint-imports`` on the package found first under ``tree`` (its own pyproject.toml)."""
    exe = shutil.which("lint-imports", path=str(Path(sys.executable).parent)) or "lint-imports"
    env = {"PATH": os.environ.get("PATH", ""), "PYTHONPATH": str(tree)}
    return subprocess.run([exe, "--no-cache"], cwd=tree, capture_output=True, text=True, timeout=120, env=env)


def test_the_layers_and_acyclic_contracts_are_kept():
    result = lint_imports(ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "2 kept, 0 broken" in result.stdout


def test_a_lower_layer_importing_a_higher_one_breaks_the_contract(tmp_path):
    """The contract can fail: the observe layer reading the scheduler (the old cycle) is refused."""
    shutil.copytree(ROOT / "hotplugd", tmp_path / "hotplugd", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path)
    metrics = tmp_path / "hotplugd" / "observe" / "metrics.py"
    with metrics.open("a") as f:
        f.write("\nif False:\n    from hotplugd.engine.scheduler import Scheduler  # noqa: F401 - type checking only\n")
    result = lint_imports(tmp_path)
    assert result.returncode != 0
    assert "hotplugd.observe.metrics -> hotplugd.engine.scheduler" in result.stdout
