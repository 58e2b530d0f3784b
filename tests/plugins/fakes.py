"""Plugin modules for tests, and a way to offer them as ``hotplugd`` entry points."""

from __future__ import annotations

import importlib.metadata
import sys
import textwrap
import uuid
from pathlib import Path

import pytest

from hotplugd.plugin.manager import ENTRY_POINT_GROUP

GOOD = """
from hotplugd import hookimpl

@hookimpl
def hotplugd_register_backends(registry):
    registry.add("{name}", lambda options: None, summary="a test backend")

@hookimpl
def hotplugd_block_outcome(report):
    pass
"""

TYPO = """
from hotplugd import hookimpl

@hookimpl
def hotplugd_block_outcom(report):
    pass
"""

EXPLODES = """
raise ImportError("libcxl.so.1: cannot open shared object file")
"""

WRONG_ARGS = """
from hotplugd import hookimpl

@hookimpl
def hotplugd_block_outcome(report, verdict):
    pass
"""

ASYNC = """
from hotplugd import hookimpl

@hookimpl
async def hotplugd_choose_zone(block):
    return None
"""

WRAPPER = """
from hotplugd import hookimpl

@hookimpl(wrapper=True)
def hotplugd_phase_started(phase):
    return (yield)
"""

STATEFUL = """
from hotplugd import hookimpl

class Counting:
    \"\"\"A class entry point: hotplugd makes one instance per plugin manager.\"\"\"

    def __init__(self):
        self.outcomes = 0

    @hookimpl
    def hotplugd_block_outcome(self, report):
        self.outcomes += 1
"""

REGISTER_RAISES = """
from hotplugd import hookimpl

@hookimpl
def hotplugd_register_backends(registry):
    raise KeyError("CXL_DEVICE")
"""


class FakeDist:
    """Just what hotplugd reads from a distribution: its name and version."""

    def __init__(self, name: str, version: str) -> None:
        self.name, self.version = name, version


class Installed:
    """Plugin modules written to a folder on sys.path, offered as ``hotplugd`` entry points."""

    def __init__(self, folder: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        self.folder = folder
        self.monkeypatch = monkeypatch
        self.entry_points: list[importlib.metadata.EntryPoint] = []
        self.modules: list[str] = []  # imported from ``folder``; forgotten by ``close``
        self._real = list(importlib.metadata.entry_points(group=ENTRY_POINT_GROUP))
        monkeypatch.syspath_prepend(str(folder))
        monkeypatch.setattr(importlib.metadata, "entry_points", self._select)

    def _select(self, **params: str) -> importlib.metadata.EntryPoints:
        assert params == {"group": ENTRY_POINT_GROUP}
        return importlib.metadata.EntryPoints(self.entry_points)

    def close(self) -> None:
        """Forget every module imported from the folder (the next test's files are new)."""
        for module in self.modules:
            for loaded in [m for m in sys.modules if m == module or m.startswith(f"{module}.")]:
                del sys.modules[loaded]

    def keep_real(self) -> None:
        """Offer the really installed entry points (``simulated``, ...) as well."""
        self.entry_points[:0] = self._real

    def add(self, name: str, source: str, version: str = "1.0") -> str:
        """Install a plugin ``name`` whose module (unique per test) holds ``source``."""
        module = f"hotplugd_test_{name.replace('-', '_')}_{uuid.uuid4().hex[:12]}"
        (self.folder / f"{module}.py").write_text(textwrap.dedent(source.format(name=name)))
        self.modules.append(module)
        self.offer(name, module, f"hotplugd-{name}", version)
        return module

    def offer(self, name: str, value: str, distribution: str, version: str) -> None:
        """Offer an entry point ``name = value`` of ``distribution`` (its module must be importable)."""
        ep = importlib.metadata.EntryPoint(name, value, ENTRY_POINT_GROUP)
        self.entry_points.append(ep._for(FakeDist(distribution, version)))


def rows(text: str, title: str) -> dict[str, list[str]]:
    """The table titled ``title`` as {first cell: other cells} (continuation lines folded in)."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.strip() == title)
    out: dict[str, list[str]] = {}
    key = None
    for line in lines[start + 1:]:
        if not line.startswith("│"):
            if key is not None and line.startswith("└"):
                break
            continue
        cells = [c.strip() for c in line.strip("│").split("│")]
        if cells[0]:
            key = cells[0]
            out[key] = cells[1:]
        elif key is not None:  # a continuation line of the row above
            out[key] = [f"{a} {b}".strip() for a, b in zip(out[key], cells[1:], strict=True)]
    return out
