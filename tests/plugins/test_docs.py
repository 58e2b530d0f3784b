"""docs/plugins.md stays in step with the code: every hook, its signature and arguments, every fixture,
and a quickstart that really works when its files are written out and its tests run.
"""

from __future__ import annotations

import ast
import inspect
import os
import re
import subprocess
import sys
import tomllib
from collections.abc import Callable
from pathlib import Path

import pytest

from hotplugd.commands.cli import main
from hotplugd.plugin import spec as hookspecs
from hotplugd.testing import pytest_plugin

from .fakes import Installed, rows

DOCS = Path(__file__).resolve().parents[2] / "docs" / "plugins.md"
MARKER = f"{hookspecs.PROJECT}_spec"


def specs() -> dict[str, Callable]:
    """Every hookspec, found by pluggy's marker rather than by name."""
    return {name: f for name, f in vars(hookspecs).items() if callable(f) and hasattr(f, MARKER)}


def sections(text: str) -> dict[str, tuple[str, str]]:
    """``### `hook` ...`` headings → (heading, body up to the next heading)."""
    out = {}
    parts = re.split(r"^(#{2,3} .*)$", text, flags=re.MULTILINE)
    for heading, body in zip(parts[1::2], parts[2::2], strict=True):
        match = re.match(r"### `(hotplugd_\w+)`", heading)
        if match:
            out[match.group(1)] = (heading, body)
    return out


def code_blocks(text: str, lang: str) -> list[str]:
    return re.findall(rf"^```{lang}\n(.*?)^```$", text, flags=re.MULTILINE | re.DOTALL)


def signature_line(name: str, func: Callable) -> str:
    """``def name(arg: Type, ...) -> Return`` as hookspecs.py spells it."""
    sig = inspect.signature(func)
    args = ", ".join(f"{p.name}: {p.annotation}" for p in sig.parameters.values())
    return f"def {name}({args}) -> {sig.return_annotation}"


TEXT = DOCS.read_text()
SECTIONS = sections(TEXT)


def test_there_are_hooks_to_document():
    assert {"hotplugd_register_backends", "hotplugd_choose_zone", "hotplugd_check_config"} <= set(specs())


@pytest.mark.parametrize("name", sorted(specs()))
def test_every_hook_has_a_reference_section(name):
    assert name in SECTIONS, f"docs/plugins.md has no '### `{name}`' section"


@pytest.mark.parametrize("name", sorted(specs()))
def test_reference_states_firstresult_exactly_for_firstresult_hooks(name):
    firstresult = getattr(specs()[name], MARKER).get("firstresult", False)
    heading, body = SECTIONS[name]
    assert ("(firstresult)" in heading) == firstresult
    assert ("**firstresult**" in body) == firstresult
    if not firstresult:
        assert "every implementation" in body.lower()


@pytest.mark.parametrize("name", sorted(specs()))
def test_reference_shows_the_real_signature_and_every_argument(name):
    func = specs()[name]
    _, body = SECTIONS[name]
    assert code_blocks(body, "python")[0].strip() == signature_line(name, func)
    for arg in inspect.signature(func).parameters:
        assert f"- `{arg}`:" in body, f"argument {arg!r} of {name} is not described"


def test_every_hook_implemented_in_the_docs_exists():
    defined = set(re.findall(r"^\s*def (hotplugd_\w+)\(", "\n".join(code_blocks(TEXT, "python")), re.MULTILINE))
    assert defined and defined <= set(specs())


def test_every_python_example_is_valid_python():
    for block in code_blocks(TEXT, "python"):
        if not block.lstrip().startswith("def hotplugd_"):  # the reference's signature lines
            ast.parse(block)


def test_every_fixture_is_documented():
    # From the source, not from pytest's fixture objects, whose shape differs between versions
    # (Debian 13's pytest 8.3 has no FixtureFunctionDefinition).
    tree = ast.parse(Path(pytest_plugin.__file__).read_text())
    fixtures = {node.name for node in tree.body if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
                and any(ast.unparse(d).startswith(("pytest.fixture", "fixture")) for d in node.decorator_list)}
    assert {"make_daemon", "hook_recorder", "fake_backend"} <= fixtures
    for name in fixtures:
        assert f"| `{name}` |" in TEXT, f"fixture {name} is missing from the testing table"


def write_quickstart(dest: Path) -> dict[str, Path]:
    """Every code block that starts with a ``# path`` comment, written to ``dest/path``."""
    written = {}
    for lang in ("python", "toml"):
        for block in code_blocks(TEXT, lang):
            first, _, rest = block.partition("\n")
            if re.fullmatch(r"# [\w./-]+\.(py|toml)", first):
                path = dest / first[2:]
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text(rest)
                written[first[2:]] = path
    (dest / "src" / "hotplugd_hello" / "__init__.py").write_text("")
    return written


def test_quickstart_files_work_as_written(tmp_path):
    """The quickstart's own tests pass, run by pytest on hotplugd's fixtures (loaded by its pyproject's addopts)."""
    written = write_quickstart(tmp_path)
    assert set(written) == {"pyproject.toml", "src/hotplugd_hello/backend.py", "src/hotplugd_hello/plugin.py",
                            "tests/test_hello.py"}
    # hotplugd as this run imports it (a venv, the Debian package, or the package build's tree).
    here = Path(pytest_plugin.__file__).resolve().parents[2]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path / "src"), str(here)])}
    out = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests"], cwd=tmp_path,
                         env=env, capture_output=True, text=True, timeout=120, check=False)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "2 passed" in out.stdout


def test_quickstart_entry_point_shows_up_in_hotplugd_plugins(tmp_path, monkeypatch, capsys):
    """The pyproject's entry point, offered as installed: `hotplugd plugins` lists the plugin and backend."""
    write_quickstart(tmp_path)
    project = tomllib.loads((tmp_path / "pyproject.toml").read_text())["project"]
    (name, value), = project["entry-points"]["hotplugd"].items()
    installed = Installed(tmp_path / "src", monkeypatch)
    installed.keep_real()
    installed.offer(name, value, project["name"], project["version"])
    installed.modules.append("hotplugd_hello")
    try:
        assert main(["plugins"]) == 0
    finally:
        installed.close()
    out = capsys.readouterr().out
    assert rows(out, "plugins")["hello"][:2] == ["hotplugd-hello 0.1.0", "hotplugd_hello.plugin"]
    assert rows(out, "backends")["hello"] == ["hello", "a toy host with offline blocks"]
