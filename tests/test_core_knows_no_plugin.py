"""The core knows no plugin: no built-in plugin's package, entry-point name, config key or backend-specific method
appears in hotplugd/ (its code: identifiers, imports, attribute names and string constants; docstrings may
mention them). What the core needs of a plugin it asks through a hook or the Backend contract: what a backend
onlines (``BackendSubject``), which reads this host (``hotplugd_host_backend``), what a plugin installs
(``hotplugd_install_files``).
"""

from __future__ import annotations

import ast
import dataclasses
import enum
import importlib
import importlib.metadata
import inspect
import re
from pathlib import Path

from hotplugd import Backend
from hotplugd.config import describe

REPO = Path(__file__).resolve().parents[1]
CORE = REPO / "hotplugd"
BUILTINS = {"sysfs": "hotplugd_sysfs", "simulated": "hotplugd_simulated", "qga": "hotplugd_qga",
            "libvirt": "hotplugd_libvirt"}
SHARED = ("hotplugd_guestagent",)  # a library of the guest plugins, no entry point
WORD = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")

def _docstrings(tree: ast.AST) -> set[int]:
    return {id(node.body[0].value) for node in ast.walk(tree)
            if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef)
            and node.body and isinstance(node.body[0], ast.Expr) and isinstance(node.body[0].value, ast.Constant)}


def _scan(path: Path) -> tuple[set[str], set[str], set[str]]:
    """(names: identifiers, imports and attributes; words of string constants; whole string constants)."""
    tree = ast.parse(path.read_text())
    docs = _docstrings(tree)
    names: set[str] = set()
    words: set[str] = set()
    whole: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docs:
            words.update(WORD.findall(node.value))
            whole.add(node.value)
        elif isinstance(node, ast.Name):
            names.add(node.id)
        elif isinstance(node, ast.Attribute):
            names.add(node.attr)
        elif isinstance(node, ast.alias):
            names.update(node.name.split("."))
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.update(node.module.split("."))
        elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            names.add(node.name)
    return names, words, whole


def _core_defines() -> set[str]:
    """Every name the core defines itself (functions, classes, assignments, arguments)."""
    out: set[str] = set()
    for path in CORE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
                out.add(node.name)
            elif isinstance(node, ast.arg):
                out.add(node.arg)
            elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
                out.add(node.id)
    return out


def public_vocabulary() -> set[str]:
    """The words of hotplugd's public API: its names, their attributes, fields and enum values, and every part
    of the core config's keys (a plugin key that is one of them, e.g. ``size`` or ``kernel``, is not the plugin's)."""
    import hotplugd

    words = {part for key, _default, _help in describe() for part in key.split(".")} | {"name"}
    for name in hotplugd.__all__:
        obj = getattr(hotplugd, name)
        words |= {name, *(a for a in dir(obj) if not a.startswith("_"))}
        if inspect.isclass(obj) and issubclass(obj, enum.Enum):
            words |= {str(member.value) for member in obj}
    return words


def plugin_keys() -> set[str]:
    """Every key of the built-in plugins' tables that is not also a key of the core's config."""
    keys = set()
    for package in BUILTINS.values():
        module = importlib.import_module(f"{package}.settings")
        for cls in vars(module).values():
            if inspect.isclass(cls) and dataclasses.is_dataclass(cls) and cls.__module__ == module.__name__:
                keys |= {f.metadata.get("key", f.name) for f in dataclasses.fields(cls)}
    return keys - {key.rpartition(".")[2] for key, _default, _help in describe()}


def plugin_methods() -> set[str]:
    """The public methods of the built-in backends beyond the Backend contract (and not the core's own names)."""
    methods = set()
    for package in BUILTINS.values():
        module = importlib.import_module(f"{package}.backend")
        for cls in vars(module).values():
            if inspect.isclass(cls) and issubclass(cls, Backend) and cls is not Backend:
                methods |= {name for name in vars(cls) if not name.startswith("_")}
    return methods - set(dir(Backend)) - _core_defines()


def offences() -> dict[str, set[str]]:
    """file -> the plugin names, keys and methods its code mentions."""
    packages = {*BUILTINS.values(), *SHARED}
    entry_points = {ep.name for ep in importlib.metadata.entry_points(group="hotplugd")} | set(BUILTINS)
    keys, methods, vocabulary = plugin_keys(), plugin_methods(), public_vocabulary()
    out = {}
    for path in sorted(CORE.rglob("*.py")):
        names, words, whole = _scan(path)
        found = ((names | words) & (packages | entry_points)) | (names & methods)
        found |= {w for w in words & keys if "_" in w} | (whole & keys - vocabulary)
        if found:
            out[str(path.relative_to(CORE))] = found
    return out


def test_the_scan_sees_what_it_looks_for():
    assert {"udev_rules_dirs", "rcvbuf", "guest_dirs", "scenario", "uri"} <= plugin_keys()
    assert {"expected_blocks", "whatif", "compare"} <= plugin_methods()
    assert "concurrency" not in plugin_keys() - {"concurrency"} and "backend" not in plugin_keys()


def test_a_planted_mention_is_found(tmp_path, monkeypatch):
    planted = CORE / "engine" / "_planted_for_test.py"
    planted.write_text('import hotplugd_sysfs\n\n\ndef f(backend, config):\n'
                       '    backend.expected_blocks()\n    return config.plugins["x"].get("udev_rules_dirs")\n')
    try:
        assert offences()["engine/_planted_for_test.py"] == {"hotplugd_sysfs", "expected_blocks", "udev_rules_dirs"}
    finally:
        planted.unlink()


def test_the_core_names_no_plugin():
    assert offences() == {}, "the core names a plugin: ask it through a hook or the Backend contract instead"
