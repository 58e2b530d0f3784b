"""Shared helpers for the sysfs backend's tests: the real kernel captures in ``data/uevents`` (see its README)."""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from pathlib import Path

import pytest

CAPTURES = Path(__file__).resolve().parent / "data" / "uevents"


@dataclass(frozen=True)
class Capture:
    data: bytes
    sender_pid: int
    groups: int


def load_captures(name: str = "guest-6.1-memory-hotplug.jsonl") -> list[Capture]:
    path = CAPTURES / name
    assert path.is_file(), f"no real captures at {path}: they are part of the repository"
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return [Capture(base64.b64decode(r["b64"]), r["sender_pid"], r["groups"]) for r in rows]


@pytest.fixture(scope="session")
def captures() -> list[Capture]:
    return load_captures()
