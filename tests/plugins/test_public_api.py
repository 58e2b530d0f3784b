"""The public API is what plugins use: ``hotplugd.__all__`` and the ``hotplugd.testing`` kit, nothing else.

The built-in plugins (``plugins/``) and the example (``examples/``) are written
exactly as a third party would write them; this keeps them so.
"""

from __future__ import annotations

import ast
from pathlib import Path

import hotplugd

ROOT = Path(__file__).resolve().parents[2]
PUBLIC_MODULES = {"hotplugd.testing"}


def hotplugd_imports(path: Path) -> list[tuple[int, str, str]]:
    """(line, module, name) for every import of hotplugd in ``path`` (name "" for ``import x``)."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module and (
                node.module == "hotplugd" or node.module.startswith("hotplugd.")):
            found += [(node.lineno, node.module, alias.name) for alias in node.names]
        elif isinstance(node, ast.Import):
            found += [(node.lineno, alias.name, "") for alias in node.names
                      if alias.name == "hotplugd" or alias.name.startswith("hotplugd.")]
    return found


def private_uses(path: Path, root: Path = ROOT) -> list[str]:
    problems = []
    for line, module, name in hotplugd_imports(path):
        if module in PUBLIC_MODULES or (module == "hotplugd" and name in hotplugd.__all__):
            continue
        problems.append(f"{path.relative_to(root)}:{line}: {module}{'.' + name if name else ''}")
    return problems


def test_plugins_and_the_example_import_only_the_public_api():
    files = sorted([*ROOT.glob("plugins/**/*.py"), *ROOT.glob("examples/**/*.py")])
    assert len(files) > 20
    problems = [p for f in files for p in private_uses(f)]
    assert problems == []


def test_every_public_name_exists():
    assert all(hasattr(hotplugd, name) for name in hotplugd.__all__)


def test_the_check_catches_a_private_import(tmp_path):
    plugin = tmp_path / "plugin.py"
    plugin.write_text("from hotplugd.engine.zones import policy_request\nfrom hotplugd import Block, narrow\n"
                      "import hotplugd.observe\n")
    assert private_uses(plugin, tmp_path) == ["plugin.py:1: hotplugd.engine.zones.policy_request",
                                              "plugin.py:3: hotplugd.observe"]
