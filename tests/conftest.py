"""Shared by every test directory: the VM harness and its pytest plugin (:mod:`harness.pytest_plugin`).

The plugin gives the ``vm_assets`` fixture to tests/vm, tests/sysfs and tests/reliability alike.
pytest reads ``pytest_plugins`` only in this top-level conftest.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import structlog
from hypothesis import settings

# No per-example deadline: a test never judges wall-clock time, and a loaded machine (CI, a package
# build) takes more than hypothesis's default 200 ms for an example now and then.
settings.register_profile("hotplugd", deadline=None)
settings.load_profile("hotplugd")

# Make ``harness`` (tests/vm/harness) importable from every test directory, whatever pytest's import mode.
_VM_TESTS = str(Path(__file__).resolve().parent / "vm")
if _VM_TESTS not in sys.path:
    sys.path.insert(0, _VM_TESTS)

# hotplugd.testing.pytest_plugin is opt-in (no pytest11 entry point: a host with hotplugd installed
# must not load it into every pytest run); hotplugd's own tests opt in here, as plugin authors do.
pytest_plugins = ["hotplugd.testing.pytest_plugin", "hotplugd_sysfs.testing.pytest_plugin", "harness.pytest_plugin",
                  "pytester"]  # pytester: tests/vm/test_pytest_plugin.py


@pytest.fixture(autouse=True)
def _structlog_config_per_test() -> Iterator[None]:
    """Each test leaves structlog configured as it found it: a test that runs ``hotplugd`` in-process
    (its ``logs.configure``) left a level filter behind that made the next tests' ``capture_logs`` miss
    every info line, so tests passed alone and failed in the full suite."""
    saved = structlog.get_config()
    yield
    structlog.configure(**saved)
