"""The sysfs backend's settings: the ``[plugins.sysfs]`` table, validated."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from hotplugd import ConfigProblem, parse_size

from .daxrules import DaxRule, parse_rules

#: Where udev reads rules from, highest priority first (a file in an earlier
#: directory masks one of the same name in a later one).
UDEV_RULES_DIRS = ("/etc/udev/rules.d", "/run/udev/rules.d", "/usr/lib/udev/rules.d")
DEFAULT_RCVBUF = 32 << 20
WRITERS = ("process", "thread")


@dataclass(frozen=True)
class Settings:
    root: str = "/sys"  # the sysfs root; every sysfs path is built from it
    proc: str = "/proc"  # the proc root (meminfo)
    udev_rules_dirs: tuple[str, ...] = UDEV_RULES_DIRS
    concurrency: int = 1  # mainline serialises onlining under device_hotplug_lock
    batch: int = 32  # blocks one online call writes back to back (one writer request, or one worker-thread call)
    rcvbuf: int = DEFAULT_RCVBUF  # netlink receive buffer, bytes
    netlink: bool = True  # False: events come only from SysfsBackend.feed() (tests)
    writer: str = "process"  # who writes state files: a writer process, or a worker "thread"
    dax: tuple[DaxRule, ...] = ()  # [[plugins.sysfs.dax]]: the dax devices converted to system RAM (none by default)


def _path(value: Any) -> str:
    if not isinstance(value, str) or not value.startswith("/"):
        raise ValueError(f"expected an absolute path, got {value!r}")
    return value.rstrip("/") or "/"


def _dirs(value: Any) -> tuple[str, ...]:
    if not isinstance(value, list):
        raise ValueError(f"expected a list of absolute paths, got {value!r}")
    return tuple(_path(v) for v in value)


def _concurrency(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 4096:
        raise ValueError(f"expected a whole number between 1 and 4096, got {value!r}")
    return value


def _batch(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 1024:
        raise ValueError(f"expected a whole number between 1 and 1024, got {value!r}")
    return value


def _rcvbuf(value: Any) -> int:
    size = parse_size(value)
    if not 64 << 10 <= size <= 1 << 31:
        raise ValueError(f"must be between 64 KiB and 2 GiB, got {value!r}")
    return size


def _bool(value: Any) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"expected true or false, got {value!r}")
    return value


def _writer(value: Any) -> str:
    if value not in WRITERS:
        raise ValueError(f"expected one of {', '.join(map(repr, WRITERS))}, got {value!r}")
    return str(value)


_PARSERS = {"root": _path, "proc": _path, "udev_rules_dirs": _dirs, "concurrency": _concurrency,
            "batch": _batch, "rcvbuf": _rcvbuf, "netlink": _bool, "writer": _writer, "dax": parse_rules}


def parse(table: Mapping[str, Any], problems: list[ConfigProblem] | None = None) -> Settings:
    """Settings from the plugin's table; problems are appended (or raised as ValueError when not collected)."""
    collect: list[ConfigProblem] = [] if problems is None else problems
    kwargs: dict[str, Any] = {}
    for key, value in table.items():
        dotted = f"plugins.sysfs.{key}"
        parser = _PARSERS.get(key)
        if parser is None:
            collect.append(ConfigProblem(dotted, "unknown key", f"known keys: {', '.join(_PARSERS)}"))
            continue
        try:
            kwargs[key] = parser(value)
        except ValueError as exc:
            collect.append(ConfigProblem(dotted, str(exc), "the keys are documented in `python -m pydoc hotplugd_sysfs`"))
    if problems is None and collect:
        raise ValueError("; ".join(f"{p.key}: {p.message}" for p in collect))
    return Settings(**kwargs)
