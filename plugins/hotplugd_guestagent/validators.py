"""Value parsers shared by the guest backends' config tables: each returns the value or raises ValueError."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from hotplugd import parse_duration

#: Blocks one guest kernel may online at once: beyond this is a typo.
MAX_GUEST_CONCURRENCY = 256


def duration(lo: float, hi: float) -> Callable[[Any], float]:
    def parse(value: Any) -> float:
        seconds = parse_duration(value)
        if not lo <= seconds <= hi:
            raise ValueError(f"must be between {lo} and {hi} seconds, got {value!r}")
        return seconds

    return parse


def whole(lo: int, hi: int) -> Callable[[Any], int]:
    def parse(value: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
            raise ValueError(f"expected a whole number between {lo} and {hi}, got {value!r}")
        return value

    return parse


def concurrency(value: Any) -> int:
    """Blocks one guest's kernel onlines at once (no longer the number of guests: that is ``parallel_guests``)."""
    if value == 0 and not isinstance(value, bool):
        raise ValueError("0 is no longer allowed: concurrency is per guest (blocks its kernel onlines at once, "
                         "1 on mainline); guests in parallel are parallel_guests")
    return whole(1, MAX_GUEST_CONCURRENCY)(value)


def boolean(value: Any) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"expected true or false, got {value!r}")
    return value
