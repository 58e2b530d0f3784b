"""Shared by every test directory: the VM harness and its pytest plugin (:mod:`harness.pytest_plugin`).

The plugin gives the ``vm_assets`` fixture to tests/vm, tests/sysfs and tests/reliability alike.
pytest reads ``pytest_plugins`` only in this top-level conftest.
"""

from __future__ import annotations

import sys
from pathlib import Path

# Make ``harness`` (tests/vm/harness) importable from every test directory, whatever pytest's import mode.
_VM_TESTS = str(Path(__file__).resolve().parent / "vm")
if _VM_TESTS not in sys.path:
    sys.path.insert(0, _VM_TESTS)

pytest_plugins = ["harness.pytest_plugin", "pytester"]  # pytester: tests/vm/test_pytest_plugin.py
