"""Docs that cannot go stale: the reference config shows every key of every table (the core's and each
built-in plugin's) with the default the code really has, and nothing in the repository points outside it."""

from __future__ import annotations

import dataclasses
import importlib
import math
import re
import subprocess
import tomllib
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
REFERENCE = ROOT / "config" / "hotplugd.toml"
#: Built-in plugin -> its settings module (``Settings`` dataclass of defaults, ``parse(table, problems)``).
PLUGINS = {"sysfs": "hotplugd_sysfs.settings", "simulated": "hotplugd_simulated.settings",
           "qga": "hotplugd_qga.settings", "libvirt": "hotplugd_libvirt.settings"}
#: Settings fields a table spells differently, and array-of-tables keys documented as ``[[plugins.<name>.<key>]]``.
TABLE_KEYS = {("qga", "guests"): "guest"}
#: Tables shown as an example to uncomment (``# [plugins.<name>]``, values to adapt): keys checked, values not.
EXAMPLES = {"libvirt"}
_LINE = re.compile(r"^#\s?(?P<key>[a-z_]+)\s*=\s*(?P<value>.*)$")


def section(name: str) -> list[str]:
    """The lines of ``[plugins.<name>]`` in the reference config, up to the next table."""
    lines = REFERENCE.read_text().splitlines()
    start = next(i for i, line in enumerate(lines) if re.match(rf"^(# )?\[plugins\.{name}\]", line))
    end = next((i for i in range(start + 1, len(lines)) if re.match(r"^(# )?\[[a-z]", lines[i])), len(lines))
    return lines[start + 1:end]


def value_of(text: str) -> Any:
    """A documented value: the TOML before a trailing ``# comment`` (tried from the right)."""
    candidates = [text] + [text[:m.start()] for m in reversed(list(re.finditer(r"\s#", text)))]
    for candidate in candidates:
        try:
            return tomllib.loads(f"v = {candidate.strip()}")["v"]
        except tomllib.TOMLDecodeError:
            continue
    raise AssertionError(f"not a TOML value: {text!r}")


def documented(name: str) -> tuple[dict[str, Any], set[str], set[str]]:
    """(key -> value) of the table's own documented keys, keys documented without a value (``# key =``, unset
    by default), and array-of-tables keys (``# [[plugins.<name>.<key>]]``). Keys under such a header are that
    sub-table's, not the plugin's."""
    values: dict[str, Any] = {}
    unset: set[str] = set()
    arrays: set[str] = set()
    in_array = False
    for line in section(name):
        header = re.match(rf"^#\s?\[\[plugins\.{name}\.([a-z_]+)\]\]", line)
        if header:
            arrays.add(header.group(1))
            in_array = True
            continue
        match = _LINE.match(line)
        if match is None or in_array:
            continue
        text = match.group("value").strip()
        if not text or text.startswith("#"):
            unset.add(match.group("key"))
        else:
            values[match.group("key")] = value_of(text)
    return values, unset, arrays


def same(a: Any, b: Any) -> bool:
    if isinstance(a, float) or isinstance(b, float):
        return isinstance(a, int | float) and isinstance(b, int | float) and math.isclose(a, b, rel_tol=1e-9)
    return a == b


@pytest.mark.parametrize("name", sorted(PLUGINS))
def test_every_key_of_a_built_in_plugin_is_in_the_reference_config_with_its_real_default(name):
    module = importlib.import_module(PLUGINS[name])
    values, unset, arrays = documented(name)
    defaults = module.Settings()
    for f in dataclasses.fields(module.Settings):
        key = TABLE_KEYS.get((name, f.name), f.name)
        assert key in values or key in unset or key in arrays, \
            f"[plugins.{name}] {key} is not in {REFERENCE.name} (default {getattr(defaults, f.name)!r})"
        if key in unset:
            assert getattr(defaults, f.name) in (None, "", ()), f"[plugins.{name}] {key}: documented unset"
    if name in EXAMPLES:
        return
    problems: list[Any] = []
    parsed = module.parse(values, problems, **({"require_guests": False} if name == "qga" else {}),
                          **({"require_selection": False} if name == "libvirt" else {}))
    assert problems == [], f"[plugins.{name}] as documented: {problems}"
    for f in dataclasses.fields(module.Settings):
        if TABLE_KEYS.get((name, f.name), f.name) in values:
            shown, real = getattr(parsed, f.name), getattr(defaults, f.name)
            assert same(shown, real), f"[plugins.{name}] {f.name}: the reference says {shown!r}, the code {real!r}"


def test_the_reference_tables_have_no_key_the_code_does_not_know():
    for name, module_name in PLUGINS.items():
        fields = {TABLE_KEYS.get((name, f.name), f.name)
                  for f in dataclasses.fields(importlib.import_module(module_name).Settings)}
        values, unset, arrays = documented(name)
        stale = (set(values) | unset | arrays) - fields
        assert not stale, f"[plugins.{name}] documents keys the code no longer has: {sorted(stale)}"


def test_nothing_in_the_repository_points_outside_it():
    """A clone has no ../shared: the facts and data the docs, tests and code need are copied in (docs/facts,
    tests/sysfs/data)."""
    files = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout.split()
    outside = re.compile(r"\.\./shared|(?<![\w/])shared/(vm|kernel|uevents|hooks)|/work/shared")
    here = "tests/core/test_repository_docs.py"
    texts = [path for path in files if not path.startswith("docs/facts/") and path != here
             and (path.endswith((".py", ".md", ".toml", ".yml", ".sh", ".cfg", ".txt")) or path.startswith("scripts/"))]
    hits = [f"{path}:{n}" for path in texts for n, line in enumerate(_lines(ROOT / path), 1) if outside.search(line)]
    assert hits == []


def _lines(path: Path) -> list[str]:
    try:
        return path.read_text(encoding="utf-8").splitlines()
    except (UnicodeDecodeError, IsADirectoryError, FileNotFoundError):
        return []


def test_the_real_kernel_captures_are_in_the_repository():
    data = ROOT / "tests" / "sysfs" / "data" / "uevents"
    assert len((data / "guest-6.1-memory-hotplug.jsonl").read_text().splitlines()) == 50
    assert "sender_pid" in (data / "README.md").read_text()


def _headline() -> dict[str, list[float]]:
    """The newest vm_online headline that ran the C loop, hotplugd onlining itself and the udev rule (results
    page first, then its history): each onliner's median x kernel auto-online on dimm 4, dimm 16 and virtio-mem."""
    for page in ("README.md", "HISTORY.md"):
        for table in (ROOT / "bench" / page).read_text().split("\n\n"):
            rows_needed = ("C loop", "hotplugd onlining itself", "udev rule")
            if not (table.startswith("| median") and all(f"\n| {row}" in table for row in rows_needed)):
                continue
            rows = {}
            for line in table.splitlines()[2:]:
                cells = [c.strip().strip("*") for c in line.strip("|").split("|")]
                rows[cells[0]] = [float(c) for c in cells[1:4]]
            return rows
    raise AssertionError("no vm_online headline with C loop, hotplugd onlining itself and udev rule rows in bench/")


def test_the_readme_s_ratios_are_the_results_page_s():
    rows = _headline()
    c_loop = next(v for k, v in rows.items() if k.startswith("C loop"))
    itself = next(v for k, v in rows.items() if k.startswith("hotplugd onlining itself"))
    udev = next(v for k, v in rows.items() if k.startswith("udev rule"))
    readme = " ".join((ROOT / "README.md").read_text().split())
    dimm = sorted(c_loop[:2])
    assert f"needs {dimm[0]:.2f} to {dimm[1]:.2f} times the kernel's own auto-online on DIMMs and " \
           f"{c_loop[2]:.2f} times on virtio-mem" in readme
    over = sorted(u / h for u, h in zip(udev, itself, strict=True))
    assert f"takes {over[0]:.1f} to {over[-1]:.1f} times as long as hotplugd onlining itself" in readme
