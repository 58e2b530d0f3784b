"""Value parsers of the ``[plugins.qga]`` table: each returns the value or raises ValueError saying what is wrong."""

from __future__ import annotations

import os
from typing import Any

from hotplugd_guestagent.validators import MAX_GUEST_CONCURRENCY, concurrency, name_problem

__all__ = ["HINT", "MAX_GUEST_CONCURRENCY", "concurrency", "glob_pattern", "name", "name_problem", "optional_socket",
           "port_id", "relative_path", "socket", "socket_path_problem"]

HINT = "the keys are documented in docs/qga.md and `python -m pydoc hotplugd_qga`"
#: A unix socket path must fit ``sockaddr_un.sun_path`` (108 bytes with the NUL).
MAX_SOCKET_PATH = 107


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
        raise ValueError("expected an absolute pattern of the guests' directories (e.g. \"/run/vms/*\"), "
                         f"got {value!r}")
    return value.rstrip("/") or "/"


def relative_path(value: Any) -> str:
    """A socket's path inside each guest's directory (empty: none)."""
    if not isinstance(value, str) or value.startswith("/") or ".." in value.split("/"):
        raise ValueError(f"expected a path inside each guest's directory (e.g. \"qga.sock\"), got {value!r}")
    return os.path.normpath(value) if value else ""
