"""The sysfs backend's settings: the ``[plugins.sysfs]`` table, validated."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from hotplugd import ConfigProblem, boolean, one_of, read_table, setting, size, whole

from .daxrules import DaxRule, parse_rules

#: Where udev reads rules from, highest priority first (a file in an earlier
#: directory masks one of the same name in a later one).
UDEV_RULES_DIRS = ("/etc/udev/rules.d", "/run/udev/rules.d", "/usr/lib/udev/rules.d")
DEFAULT_RCVBUF = 32 << 20
WRITERS = ("process", "thread")
HINT = "the keys are documented in config/hotplugd.toml and `python -m pydoc hotplugd_sysfs`"


def _path(value: Any) -> str:
    if not isinstance(value, str) or not value.startswith("/"):
        raise ValueError(f"expected an absolute path, got {value!r}")
    return value.rstrip("/") or "/"


def _dirs(value: Any) -> tuple[str, ...]:
    if not isinstance(value, list):
        raise ValueError(f"expected a list of absolute paths, got {value!r}")
    return tuple(_path(v) for v in value)


@dataclass(frozen=True)
class Settings:
    root: str = setting("/sys", _path, "the sysfs root; every sysfs path is built from it")
    proc: str = setting("/proc", _path, "the proc root (meminfo)")
    udev_rules_dirs: tuple[str, ...] = setting(UDEV_RULES_DIRS, _dirs, "where udev reads rules, highest priority first")
    concurrency: int = setting(1, whole(1, 4096),
                               "blocks onlined at once (mainline serialises under device_hotplug_lock)")
    batch: int = setting(32, whole(1, 1024), "blocks one online call writes back to back")
    rcvbuf: int = setting(DEFAULT_RCVBUF, size(64 << 10, 1 << 31, "", human=True),
                          "netlink receive buffer, bytes")
    netlink: bool = setting(True, boolean, "false: events come only from SysfsBackend.feed() (tests)")
    writer: str = setting("process", one_of(*WRITERS), "who writes state files: a writer process, or a worker thread")
    dax: tuple[DaxRule, ...] = setting((), parse_rules,
                                         "[[plugins.sysfs.dax]]: the dax devices converted to system RAM")


def parse(table: Mapping[str, Any], problems: list[ConfigProblem] | None = None) -> Settings:
    """Settings from the plugin's table; problems are appended (or raised as one ConfigError, a ValueError too)."""
    return read_table(Settings, table, "plugins.sysfs", problems, hint=HINT)
