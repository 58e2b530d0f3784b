"""Value parsers of the ``[plugins.qga]`` table: each returns the value or raises ValueError saying what is wrong."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

from hotplugd import parse_duration

HINT = "the keys are documented in docs/qga.md and `python -m pydoc hotplugd_qga`"
#: A unix socket path must fit ``sockaddr_un.sun_path`` (108 bytes with the NUL).
MAX_SOCKET_PATH = 107
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


def socket_path_problem(value: str) -> str | None:
    """What is wrong with ``value`` as a unix socket path, or None."""
    if not value.startswith("/"):
        return f"expected the absolute path of a unix socket, got {value!r}"
    if len(value.encode()) > MAX_SOCKET_PATH:
        return f"a unix socket path is at most {MAX_SOCKET_PATH} bytes, got {len(value.encode())}"
    return None


def socket(value: Any) -> str:
    if not isinstance(value, str):
        raise ValueError(f"expected the absolute path of a unix socket, got {value!r}")
    if problem := socket_path_problem(value):
        raise ValueError(problem)
    return value


def optional_socket(value: Any) -> str:
    return "" if value == "" else socket(value)


def name_problem(value: Any) -> str | None:
    """What is wrong with ``value`` as a guest name (a metrics label, a log field), or None."""
    if not isinstance(value, str) or not value.strip() or any(c.isspace() for c in value):
        return f"expected a non-empty name without spaces, got {value!r}"
    return None


def name(value: Any) -> str:
    if problem := name_problem(value):
        raise ValueError(problem)
    return value


def port_id(value: Any) -> str:
    if not isinstance(value, str):
        raise ValueError(f"expected the port's id= as a string, got {value!r}")
    return value


def glob_pattern(value: Any) -> str:
    if not isinstance(value, str) or not value.startswith("/"):
        raise ValueError(f"expected an absolute pattern of the guests' directories (e.g. \"/run/vms/*\"), got {value!r}")
    return value.rstrip("/") or "/"


def relative_path(value: Any) -> str:
    """A socket's path inside each guest's directory (empty: none)."""
    if not isinstance(value, str) or value.startswith("/") or ".." in value.split("/"):
        raise ValueError(f"expected a path inside each guest's directory (e.g. \"qga.sock\"), got {value!r}")
    return os.path.normpath(value) if value else ""
