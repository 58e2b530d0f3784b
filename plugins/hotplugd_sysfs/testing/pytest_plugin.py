"""pytest fixtures of the sysfs plugin's kit (opt-in: ``pytest -p hotplugd_sysfs.testing.pytest_plugin``, or
``pytest_plugins = ["hotplugd_sysfs.testing.pytest_plugin"]`` in a top-level conftest.py).

- ``fake_sysfs``: a fake sysfs/procfs tree under ``tmp_path`` whose ``state`` writes act like the kernel.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from hotplugd_sysfs.testing.fakesysfs import FakeSysfs


@pytest.fixture
def fake_sysfs(tmp_path: Path) -> FakeSysfs:
    """A fake ``/sys`` + ``/proc`` tree (one node, CPUs 0-3, no blocks yet): :mod:`hotplugd_sysfs.testing.fakesysfs`."""
    return FakeSysfs(tmp_path / "host")
