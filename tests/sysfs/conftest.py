"""Shared helpers for the sysfs backend's tests: the real kernel captures in ``shared/uevents``."""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from pathlib import Path

import pytest

from harness.pytest_plugin import require

CAPTURES = Path(__file__).resolve().parents[2].parent / "shared" / "uevents"


@dataclass(frozen=True)
class Capture:
    data: bytes
    sender_pid: int
    groups: int


def load_captures(name: str = "guest-6.1-memory-hotplug.jsonl") -> list[Capture]:
    path = CAPTURES / name
    require(path, f"no real captures at {path}", ci_reason="shared/ must be beside the clone")
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return [Capture(base64.b64decode(r["b64"]), r["sender_pid"], r["groups"]) for r in rows]


@pytest.fixture(scope="session")
def captures() -> list[Capture]:
    return load_captures()
