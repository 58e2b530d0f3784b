"""Fixtures for the plugin tests."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from hotplugd.plugin.manager import DISABLE_ENV

from .fakes import Installed


@pytest.fixture
def installed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Installed]:
    """Plugin modules offered as the only ``hotplugd`` entry points (``keep_real()`` adds the real ones)."""
    monkeypatch.delenv(DISABLE_ENV, raising=False)
    fake = Installed(tmp_path, monkeypatch)
    yield fake
    fake.close()
