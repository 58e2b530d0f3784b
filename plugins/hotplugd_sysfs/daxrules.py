"""Which dax devices hotplugd converts to system RAM: the ``[[plugins.sysfs.dax]]`` rules.

Only a device a rule names is ever converted; every other one (an application's
``/dev/daxX.Y``) is left alone. A rule names devices by any of:

- ``device = "dax0.0"`` (the bus name);
- ``match = {...}`` with ``device``, ``path`` (``/sys/bus/dax/devices/dax0.0`` or the
  device's own ``/sys/devices/...`` path; ``/sys`` is the configured sysfs root),
  ``node`` (its ``target_node``), ``resource`` (``"0x240000000"``: its start, or
  ``"0x240000000-0x2bfffffff"``: a range, end inclusive as in ``/proc/iomem``, that
  holds all of it) and ``uuid`` (its nd namespace's UUID). All given must match.

``memmap_on_memory = true|false`` sets the device's own attribute before it is
bound to kmem, where the kernel has it (6.8 and later); absent: left as it is.
"""

from __future__ import annotations

import os
import re
import uuid as uuidlib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .daxdevices import DaxDevice

__all__ = ["DaxRule", "parse_rules"]

_DEVICE = re.compile(r"dax\d+\.\d+")
_MATCH_KEYS = ("device", "path", "node", "resource", "uuid")
_RULE_KEYS = ("device", "match", "memmap_on_memory")


@dataclass(frozen=True, slots=True)
class DaxRule:
    """One ``[[plugins.sysfs.dax]]`` table: what it matches and how the device is converted."""

    device: str | None = None
    path: str | None = None
    node: int | None = None
    resource: tuple[int, int] | None = None  # end exclusive
    uuid: str | None = None
    memmap_on_memory: bool | None = None

    def matches(self, dev: DaxDevice, root: Path) -> bool:
        """Does every criterion the rule gives hold for ``dev``? (``root``: the sysfs root, for ``path``.)"""
        if self.device is not None and dev.name != self.device:
            return False
        if self.node is not None and dev.target_node != self.node:
            return False
        if self.uuid is not None and (dev.namespace_uuid or "").lower() != self.uuid:
            return False
        if self.resource is not None:
            lo, hi = self.resource
            exact_start = hi == lo + 1 and dev.start == lo
            if not exact_start and not (dev.ranges and all(lo <= s and e <= hi for s, e in dev.ranges)):
                return False
        if self.path is not None:
            path = root / self.path[len("/sys/"):] if self.path.startswith("/sys/") else Path(self.path)
            if os.path.realpath(path) != os.path.realpath(dev.path):
                return False
        return True

    def describe(self) -> str:
        parts = [f"{k}={v!r}" for k in _MATCH_KEYS if (v := getattr(self, k)) is not None]
        return ", ".join(parts)


def parse_rules(value: Any) -> tuple[DaxRule, ...]:
    """The rules of ``plugins.sysfs.dax`` (a list of tables); ValueError naming the entry and key."""
    if not isinstance(value, list):
        raise ValueError(f"expected a list of tables ([[plugins.sysfs.dax]]), got {value!r}")
    return tuple(_rule(i, item) for i, item in enumerate(value))


def _rule(i: int, item: Any) -> DaxRule:
    where = f"[{i}]"
    if not isinstance(item, Mapping):
        raise ValueError(f"{where}: expected a table, got {item!r}")
    unknown = sorted(set(item) - set(_RULE_KEYS))
    if unknown:
        raise ValueError(f"{where}: unknown key {unknown[0]!r} (keys: {', '.join(_RULE_KEYS)})")
    match = item.get("match", {})
    if not isinstance(match, Mapping):
        raise ValueError(f"{where}.match: expected a table such as {{node = 1}}, got {match!r}")
    unknown = sorted(set(match) - set(_MATCH_KEYS))
    if unknown:
        raise ValueError(f"{where}.match: unknown key {unknown[0]!r} (keys: {', '.join(_MATCH_KEYS)})")
    criteria = dict(match)
    if "device" in item:
        if "device" in match and match["device"] != item["device"]:
            raise ValueError(f"{where}: device {item['device']!r} and match.device {match['device']!r} differ")
        criteria["device"] = item["device"]
    if not criteria:
        raise ValueError(f"{where}: names no device: give device = \"daxX.Y\" or match = {{node = N}} "
                         "(only devices a rule names are converted)")
    kwargs: dict[str, Any] = {}
    for key, raw in criteria.items():
        try:
            kwargs[key] = _PARSERS[key](raw)
        except ValueError as exc:
            raise ValueError(f"{where}.{'device' if key == 'device' and 'device' in item else 'match.' + key}: "
                             f"{exc}") from None
    if "memmap_on_memory" in item:
        if not isinstance(item["memmap_on_memory"], bool):
            raise ValueError(f"{where}.memmap_on_memory: expected true or false, got {item['memmap_on_memory']!r}")
        kwargs["memmap_on_memory"] = item["memmap_on_memory"]
    return DaxRule(**kwargs)


def _device(value: Any) -> str:
    if not isinstance(value, str) or not _DEVICE.fullmatch(value):
        raise ValueError(f"expected a dax device name such as \"dax0.0\", got {value!r}")
    return value


def _path(value: Any) -> str:
    if not isinstance(value, str) or not value.startswith("/"):
        raise ValueError(f"expected an absolute path such as \"/sys/bus/dax/devices/dax0.0\", got {value!r}")
    return value.rstrip("/")


def _node(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < 1 << 16:
        raise ValueError(f"expected a NUMA node number, got {value!r}")
    return value


def _address(text: str) -> int:
    try:
        return int(text.strip(), 0)
    except ValueError:
        raise ValueError(f"{text.strip()!r} is not an address (hex with 0x, or decimal)") from None


def _resource(value: Any) -> tuple[int, int]:
    if not isinstance(value, str):
        raise ValueError(f"expected \"0xSTART\" or \"0xSTART-0xEND\", got {value!r}")
    lo_text, dash, hi_text = value.partition("-")
    lo = _address(lo_text)
    if not dash:
        return lo, lo + 1  # the device's start
    hi = _address(hi_text)
    if hi < lo:
        raise ValueError(f"the range {value!r} ends before it starts")
    return lo, hi + 1


def _uuid(value: Any) -> str:
    try:
        return str(uuidlib.UUID(str(value))) if isinstance(value, str) else _bad_uuid(value)
    except ValueError:
        return _bad_uuid(value)


def _bad_uuid(value: Any) -> str:
    raise ValueError(f"expected a namespace UUID such as \"6ff6e8a0-...\", got {value!r}")


_PARSERS = {"device": _device, "path": _path, "node": _node, "resource": _resource, "uuid": _uuid}
