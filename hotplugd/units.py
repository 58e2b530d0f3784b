"""Parsing of sizes ("1GiB") and durations ("200ms") for the config and the CLI."""

from __future__ import annotations

import re

_SIZE_UNITS = {
    "": 1, "b": 1,
    "k": 1 << 10, "kib": 1 << 10, "kb": 1000,
    "m": 1 << 20, "mib": 1 << 20, "mb": 1000**2,
    "g": 1 << 30, "gib": 1 << 30, "gb": 1000**3,
    "t": 1 << 40, "tib": 1 << 40, "tb": 1000**4,
    "p": 1 << 50, "pib": 1 << 50, "pb": 1000**5,
    "e": 1 << 60, "eib": 1 << 60, "eb": 1000**6,
}
_TIME_UNITS = {"": 1.0, "s": 1.0, "ms": 1e-3, "us": 1e-6, "ns": 1e-9, "m": 60.0, "min": 60.0}
_NUMBER_UNIT = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*$")


def parse_size(value: object) -> int:
    """Bytes from an int or a string like ``"1GiB"``, ``"128M"``, ``"0x8000000"``."""
    if isinstance(value, bool):
        raise ValueError("expected a size, got a boolean")
    if isinstance(value, int):
        if value < 0:
            raise ValueError("a size cannot be negative")
        return value
    if isinstance(value, str):
        text = value.strip()
        if text.lower().startswith("0x"):
            return int(text, 16)
        match = _NUMBER_UNIT.match(text)
        if match and match.group(2).lower() in _SIZE_UNITS:
            return int(float(match.group(1)) * _SIZE_UNITS[match.group(2).lower()])
    raise ValueError(f"expected a size such as 1073741824 or \"1GiB\", got {value!r}")


def parse_duration(value: object) -> float:
    """Seconds from a number or a string like ``"200ms"``, ``"2s"``."""
    if isinstance(value, bool):
        raise ValueError("expected a duration, got a boolean")
    if isinstance(value, int | float):
        if value < 0:
            raise ValueError("a duration cannot be negative")
        return float(value)
    if isinstance(value, str):
        match = _NUMBER_UNIT.match(value)
        if match and match.group(2).lower() in _TIME_UNITS:
            return float(match.group(1)) * _TIME_UNITS[match.group(2).lower()]
    raise ValueError(f"expected a duration in seconds such as 0.2 or \"200ms\", got {value!r}")


def format_bytes(n: float) -> str:
    """``1073741824`` → ``"1.0 GiB"``."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"):
        if abs(n) < 1024 or unit == "EiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError("unreachable")


def parse_cpulist(text: str) -> int:
    """How many CPUs a kernel cpulist names (sysfs ``node*/cpulist``, ``cpus_allowed_list``):
    ``"0-3,8-11"`` -> 8; empty (a memory-only node) -> 0."""
    count = 0
    for part in text.strip().split(","):
        if part:
            lo, _, hi = part.partition("-")
            count += (int(hi) - int(lo) + 1) if hi else 1
    return count
