"""The libvirt backend's settings: the ``[plugins.libvirt]`` table, validated (every problem names its key)."""

from __future__ import annotations

import fnmatch
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from hotplugd import ConfigProblem, boolean, duration, read_table, setting, whole
from hotplugd_guestagent.validators import concurrency, fleet_problems, name_problem

HINT = "the keys are documented in docs/libvirt.md and `python -m pydoc hotplugd_libvirt`"
DEFAULT_URI = "qemu:///system"
#: Texts of the metadata element that do not select a domain.
NO = frozenset({"", "no", "off", "false", "0"})


def _uri(value: Any) -> str:
    if not isinstance(value, str) or "://" not in value or any(c.isspace() for c in value):
        raise ValueError(f"expected a libvirt URI such as \"qemu:///system\", got {value!r}")
    return value


def _patterns(value: Any) -> tuple[str, ...]:
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list) or any(name_problem(p) for p in items):
        raise ValueError(f"expected a list of domain names or glob patterns (e.g. [\"vm1\", \"web-*\"]), got {value!r}")
    return tuple(items)


def _namespace(value: Any) -> str:
    if not isinstance(value, str) or ":" not in value or any(c.isspace() for c in value):
        raise ValueError(f"expected the namespace URI of a metadata element (e.g. "
                         f"\"https://example.org/hotplugd\"), got {value!r}")
    return value


@dataclass(frozen=True)
class Settings:
    uri: str = setting(DEFAULT_URI, _uri, "the libvirt URI")
    domains: tuple[str, ...] = setting((), _patterns, "names or glob patterns of the domains to manage")
    exclude: tuple[str, ...] = setting((), _patterns, "names or globs never managed, whatever selects them")
    metadata: str = setting("", _namespace, "a namespace URI: domains whose metadata element"
                                                     " in it says yes are managed")
    discover_interval: float = setting(30.0, duration(0.1, 3600), "the domain list read again"
                                       " (events are the fast path)")
    poll_interval: float = setting(5.0, duration(0.01, 3600), "fallback poll of every domain's block list")
    resize_poll_interval: float = setting(0.1, duration(0.01, 60), "poll while memory is being added")
    resize_quiet: float = setting(1.5, duration(0.0, 600), "adding is over when nothing came for this long")
    add_wait: float = setting(30.0, duration(0.0, 600),
                              "after a memory device is added, poll fast until its first block appears, this long")
    timeout: float = setting(5.0, duration(1.0, 600), "one agent request (libvirt takes whole seconds)")
    online_timeout_per_block: float = setting(0.1, duration(0.0, 60), "added to timeout per block onlined")
    reconnect_interval: float = setting(1.0, duration(0.01, 600),
                                        "agents and libvirtd alike: the first wait after a failure")
    reconnect_max: float = setting(30.0, duration(0.01, 3600), "the wait doubles up to this")
    max_batch: int = setting(256, whole(1, 65536), "blocks in one guest-set-memory-blocks")
    concurrency: int = setting(1, concurrency, "per domain: blocks its kernel onlines at once")
    parallel_domains: int = setting(0, whole(0, 65536), "domains running a final phase at once (0: all)")
    verify: bool = setting(False, boolean, "re-read the block list after each batch")
    max_threads: int = setting(64, whole(2, 1024), "libvirt calls in flight at once")

    def selects(self, name: str, metadata: str | None) -> bool:
        """Whether the domain ``name`` (with this metadata element's text, None: none) is to be managed."""
        if any(fnmatch.fnmatchcase(name, pattern) for pattern in self.exclude):
            return False
        if any(fnmatch.fnmatchcase(name, pattern) for pattern in self.domains):
            return True
        return bool(self.metadata) and metadata is not None and element_text(metadata).lower() not in NO


def element_text(xml: str) -> str:
    """The text of a metadata element as libvirt returns it (``<select xmlns="...">yes</select>``)."""
    import xml.etree.ElementTree as ET

    try:
        return "".join(ET.fromstring(xml).itertext()).strip()
    except ET.ParseError:
        return ""


def parse(table: Mapping[str, Any], problems: list[ConfigProblem] | None = None, *,
          require_selection: bool = True) -> Settings:
    """Settings from the plugin's table. Problems are appended, or raised as one ConfigError when not collected."""
    def check(settings: Settings) -> list[ConfigProblem]:
        named = settings.domains or settings.metadata or (
            isinstance(table, Mapping) and (table.get("domains") or table.get("metadata")))
        unnamed = None if named or not require_selection else ConfigProblem(
            "plugins.libvirt.domains", "no domain selected",
            'name the domains to manage: domains = ["vm1", "web-*"] (or ["*"] for all), '
            'and/or metadata = "<namespace URI>" to select those carrying that element')
        return fleet_problems(settings, "plugins.libvirt", unnamed)

    return read_table(Settings, table, "plugins.libvirt", problems, hint=HINT, check=check)
