"""Shared helpers for the sysfs backend's tests: the real kernel captures in ``shared/uevents``."""

from __future__ import annotations

import base64
import json
import os
from dataclasses import dataclass
from pathlib import Path

import pytest

CAPTURES = Path(__file__).resolve().parents[2].parent / "shared" / "uevents"


@dataclass(frozen=True)
class Capture:
    data: bytes
    sender_pid: int
    groups: int


def load_captures(name: str = "guest-6.1-memory-hotplug.jsonl") -> list[Capture]:
    path = CAPTURES / name
    if not path.exists():
        if os.environ.get("CI") == "true":
            pytest.fail(f"no real captures at {path} (CI=true: shared/ must be beside the clone)", pytrace=False)
        pytest.skip(f"no real captures at {path}")
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return [Capture(base64.b64decode(r["b64"]), r["sender_pid"], r["groups"]) for r in rows]


@pytest.fixture(scope="session")
def captures() -> list[Capture]:
    return load_captures()
