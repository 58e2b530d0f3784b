"""The text formats of sysfs and procfs files the backend reads: pure functions."""

from __future__ import annotations

import errno

from hotplugd import parse_cpulist  # the kernel's cpulist format: hotplugd's public API

__all__ = ["GONE_ERRNOS", "is_gone", "parse_cpulist", "parse_meminfo", "parse_zones"]

#: The device went away: ENOENT on open, ENODEV on a file opened before its removal.
GONE_ERRNOS = frozenset({errno.ENOENT, errno.ENODEV})


def is_gone(exc: OSError) -> bool:
    """The device went away (:data:`GONE_ERRNOS`)."""
    return exc.errno in GONE_ERRNOS


def parse_meminfo(text: str, key: str = "MemAvailable") -> int | None:
    """Bytes of one ``/proc/meminfo`` line (given in kB), or None when absent."""
    for line in text.splitlines():
        name, _, rest = line.partition(":")
        if name == key:
            fields = rest.split()
            return int(fields[0]) * 1024 if fields and fields[0].isdigit() else None
    return None


def parse_zones(text: str) -> tuple[str, ...]:
    """``valid_zones``: ``"Normal Movable"`` → ("Normal", "Movable"); ``"none"`` → ()."""
    zones = tuple(text.split())
    return () if zones == ("none",) else zones
