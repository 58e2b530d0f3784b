"""The layout is a checked rule: import-linter's contracts in pyproject.toml hold.

Four contracts: the layers, no cycle within a layer, the core never imports a
plugin, and the plugins import only hotplugd's public API. Each is shown to fail
on an import planted in a copy of the tree.
"""

import os
import pkgutil
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import hotplugd

ROOT = Path(__file__).resolve().parents[1]
#: What a plugin may import of hotplugd besides the package itself: the kit for its tests.
PUBLIC_KIT = {"hotplugd.testing"}


def lint_imports(tree: Path) -> subprocess.CompletedProcess[str]:
    """``lint-imports`` on the packages found first under ``tree`` and ``tree/plugins`` (its own pyproject.toml)."""
    exe = shutil.which("lint-imports", path=str(Path(sys.executable).parent)) or "lint-imports"
    env = {"PATH": os.environ.get("PATH", ""), "PYTHONPATH": f"{tree}:{tree / 'plugins'}"}
    return subprocess.run([exe, "--no-cache"], cwd=tree, capture_output=True, text=True, timeout=300, env=env)


def copy_tree(tmp_path: Path) -> Path:
    ignore = shutil.ignore_patterns("__pycache__")
    shutil.copytree(ROOT / "hotplugd", tmp_path / "hotplugd", ignore=ignore)
    shutil.copytree(ROOT / "plugins", tmp_path / "plugins", ignore=ignore)
    shutil.copy(ROOT / "pyproject.toml", tmp_path)
    return tmp_path


def plant(path: Path, line: str) -> None:
    with path.open("a") as f:
        f.write(f"\nif False:\n    {line}  # noqa: F401 - planted by the test\n")


def test_every_contract_is_kept():
    result = lint_imports(ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "4 kept, 0 broken" in result.stdout


def test_the_forbidden_contracts_name_every_plugin_and_every_internal_module():
    """A plugin or a core module added later is covered, or this fails."""
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]
    plugins = {p.name for p in (ROOT / "plugins").iterdir() if (p / "__init__.py").exists()}
    internals = {f"hotplugd.{m.name}" for m in pkgutil.iter_modules(hotplugd.__path__)} - PUBLIC_KIT
    core, api = (c for c in config["contracts"] if c["type"] == "forbidden")
    assert set(config["root_packages"]) == {"hotplugd"} | plugins
    assert core["source_modules"] == ["hotplugd"] and set(core["forbidden_modules"]) == plugins
    assert set(api["source_modules"]) == plugins and set(api["forbidden_modules"]) == internals


def test_a_lower_layer_importing_a_higher_one_breaks_the_contract(tmp_path):
    """The contract can fail: the observe layer reading the scheduler (the old cycle) is refused."""
    tree = copy_tree(tmp_path)
    plant(tree / "hotplugd" / "observe" / "metrics.py", "from hotplugd.engine.scheduler import Scheduler")
    result = lint_imports(tree)
    assert result.returncode != 0
    assert "hotplugd.observe.metrics -> hotplugd.engine.scheduler" in result.stdout


def test_the_core_importing_a_plugin_breaks_the_contract(tmp_path):
    tree = copy_tree(tmp_path)
    plant(tree / "hotplugd" / "engine" / "domain.py", "import hotplugd_sysfs.dax")
    result = lint_imports(tree)
    assert result.returncode != 0
    assert "The core never imports a plugin BROKEN" in result.stdout
    assert "hotplugd.engine.domain -> hotplugd_sysfs.dax" in result.stdout


def test_a_plugin_importing_an_internal_breaks_the_contract(tmp_path):
    tree = copy_tree(tmp_path)
    plant(tree / "plugins" / "hotplugd_qga" / "backend.py", "from hotplugd.engine.book import BlockBook")
    result = lint_imports(tree)
    assert result.returncode != 0
    assert "hotplugd_qga.backend -> hotplugd.engine.book" in result.stdout
