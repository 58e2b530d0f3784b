"""The libvirt backend's settings: the ``[plugins.libvirt]`` table, validated (every problem names its key)."""

from __future__ import annotations

import fnmatch
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from hotplugd import ConfigError, ConfigProblem
from hotplugd_guestagent.validators import boolean, concurrency, duration, whole

HINT = "the keys are documented in docs/libvirt.md and `python -m pydoc hotplugd_libvirt`"
DEFAULT_URI = "qemu:///system"
#: Texts of the metadata element that do not select a domain.
NO = frozenset({"", "no", "off", "false", "0"})


@dataclass(frozen=True)
class Settings:
    uri: str = DEFAULT_URI
    domains: tuple[str, ...] = ()  # names or glob patterns of the domains to manage
    exclude: tuple[str, ...] = ()  # names or globs never managed, whatever selects them
    metadata: str = ""  # a namespace URI: domains whose metadata element in it says yes are managed
    discover_interval: float = 30.0  # the domain list read again (events are the fast path)
    poll_interval: float = 5.0
    resize_poll_interval: float = 0.1
    resize_quiet: float = 1.5
    add_wait: float = 30.0  # after a memory device is added, poll fast until its first block appears, this long
    timeout: float = 5.0
    online_timeout_per_block: float = 0.1
    reconnect_interval: float = 1.0  # agents and libvirtd alike: the first wait after a failure
    reconnect_max: float = 30.0
    max_batch: int = 256
    concurrency: int = 1
    parallel_domains: int = 0
    verify: bool = False
    max_threads: int = 64  # libvirt calls in flight at once (each domain has at most one agent call)

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


def _uri(value: Any) -> str:
    if not isinstance(value, str) or "://" not in value or any(c.isspace() for c in value):
        raise ValueError(f"expected a libvirt URI such as \"qemu:///system\", got {value!r}")
    return value


def _patterns(value: Any) -> tuple[str, ...]:
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list) or not all(isinstance(p, str) and p.strip() and not any(c.isspace() for c in p)
                                              for p in items):
        raise ValueError(f"expected a list of domain names or glob patterns (e.g. [\"vm1\", \"web-*\"]), got {value!r}")
    return tuple(items)


def _namespace(value: Any) -> str:
    if not isinstance(value, str) or ":" not in value or any(c.isspace() for c in value):
        raise ValueError(f"expected the namespace URI of a metadata element (e.g. "
                         f"\"https://example.org/hotplugd\"), got {value!r}")
    return value


_PARSERS: dict[str, Callable[[Any], Any]] = {
    "uri": _uri,
    "domains": _patterns,
    "exclude": _patterns,
    "metadata": _namespace,
    "discover_interval": duration(0.1, 3600),
    "poll_interval": duration(0.01, 3600),
    "resize_poll_interval": duration(0.01, 60),
    "resize_quiet": duration(0.0, 600),
    "add_wait": duration(0.0, 600),
    "timeout": duration(1.0, 600),
    "online_timeout_per_block": duration(0.0, 60),
    "reconnect_interval": duration(0.01, 600),
    "reconnect_max": duration(0.01, 3600),
    "max_batch": whole(1, 65536),
    "concurrency": concurrency,
    "parallel_domains": whole(0, 65536),
    "verify": boolean,
    "max_threads": whole(2, 1024),
}


def parse(table: Mapping[str, Any], problems: list[ConfigProblem] | None = None, *,
          require_selection: bool = True) -> Settings:
    """Settings from the plugin's table. Problems are appended, or raised as one ConfigError when not collected."""
    collect: list[ConfigProblem] = [] if problems is None else problems
    kwargs: dict[str, Any] = {}
    if not isinstance(table, Mapping):
        collect.append(ConfigProblem("plugins.libvirt", "expected a table", HINT))
        table = {}
    for key, value in table.items():
        parser = _PARSERS.get(key)
        if parser is None:
            collect.append(ConfigProblem(f"plugins.libvirt.{key}", "unknown key", f"known keys: {', '.join(_PARSERS)}"))
            continue
        try:
            kwargs[key] = parser(value)
        except ValueError as exc:
            collect.append(ConfigProblem(f"plugins.libvirt.{key}", str(exc), HINT))
    if require_selection and not table.get("domains") and not table.get("metadata"):
        collect.append(ConfigProblem("plugins.libvirt.domains", "no domain selected",
                                     'name the domains to manage: domains = ["vm1", "web-*"] (or ["*"] for all), '
                                     'and/or metadata = "<namespace URI>" to select those carrying that element'))
    if kwargs.get("reconnect_max", Settings.reconnect_max) < kwargs.get("reconnect_interval",
                                                                          Settings.reconnect_interval):
        collect.append(ConfigProblem("plugins.libvirt.reconnect_max", "is shorter than reconnect_interval",
                                     "the wait starts at reconnect_interval and doubles up to reconnect_max"))
    if problems is None and collect:
        lines = "\n  ".join(f"{p.key}: {p.message}" for p in collect)
        raise ConfigError(f"invalid [plugins.libvirt] table:\n  {lines}", hint=HINT)
    return Settings(**kwargs)
