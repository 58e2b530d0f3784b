"""Fixtures for the plugin tests."""

from __future__ import annotations

from pathlib import Path

import pytest

from hotplugd.plugins import DISABLE_ENV

from .fakes import Installed


@pytest.fixture
def installed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Installed:
    monkeypatch.delenv(DISABLE_ENV, raising=False)
    return Installed(tmp_path, monkeypatch)
