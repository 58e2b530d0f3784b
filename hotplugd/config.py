"""Configuration: TOML, overridden by CLI flags, validated with the key, file and a hint.

The schema is the dataclasses below; their field metadata carries the parser
for each value and its help text. ``config/hotplugd.toml`` (installed as
``/etc/hotplugd/hotplugd.toml``) documents every key; errors carry the key's help.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hotplugd.errors import ConfigError
from hotplugd.schema import (
    MAX_BYTES,
    ConfigProblem,
    boolean,
    describe_table,
    duration,
    nested,
    number,
    one_of,
    read_fields,
    setting,
    size,
    string_list,
    text,
)
from hotplugd.tomlfile import DEEP_HINT, MAX_DEPTH, merge_override, parse_override, read_toml
from hotplugd.tomlfile import SHOW as _show
from hotplugd.units import parse_duration

DEFAULT_PATH = Path("/etc/hotplugd/hotplugd.toml")
DEFAULT_METRICS_PORT = 10964  # outside 9100-9999, which Prometheus's exporters have used up
LOG_LEVELS = ("debug", "info", "warning", "error")
ZONE_POLICIES = ("auto", "kernel", "movable", "auto-movable")

# Bounds on what a user can ask for: past them no machine exists, so the value is a typo.
#: The kernel's MAX_NUMNODES with its largest NODES_SHIFT (10): node numbers are below it.
MAX_NUMNODES = 1 << 10
#: Memory blocks (128 MiB, the smallest x86-64 and arm64 block) a 64-bit address space holds.
MAX_BLOCKS = MAX_BYTES // (128 << 20)
#: TOML integers are signed 64-bit (tomllib accepts any size); plugin tables are held to that.
TOML_INT = (-(1 << 63), (1 << 63) - 1)

_NODE = re.compile(r"0|[1-9][0-9]{0,9}")  # "01" would never match node 1: refused
_BLOCKS = "2^64 / 128 MiB: the memory blocks a 64-bit physical address space holds"
_RATIO = "movable memory 1000 times the kernel's could never be managed"
@dataclass
class SchedulerConfig:
    parallel_hotplug_ratio: float = setting(1.0, number(0, 64, why="64 per CPU: far past any kernel's parallelism"),
                                         "final-phase workers per CPU of the node; 0: no deferral")
    defer: str = setting("auto", one_of("auto", "always"),
                      "auto: defer only where the backend can online in parallel; always: defer whenever ratio > 0")
    settle: float = setting(0.05, duration(), "start the phase when no add event came for this long")
    max_defer: float = setting(2.0, duration(), "start the phase when the oldest block waited this long")
    max_offline_bytes: int = setting(1 << 30, size(),
                                  "start the phase at once when this many bytes wait offline")
    max_memmap_share: float = setting(0.05, number(0, 1, why="a share of MemAvailable"),
                                   "start at once when pending memmap exceeds this share of MemAvailable")
    max_pending_blocks: int = setting(1 << 20, number(1, MAX_BLOCKS, int, _BLOCKS),
                                   "queue bound; past it, events are dropped and a rescan follows")
    retries: int = setting(5, number(0, 100, int, "the backoff doubles each attempt: 100 is already forever"),
                        "attempts after the first for EBUSY/ENOMEM")
    retry_backoff: float = setting(0.01, duration(), "first retry delay; doubles each attempt")
    retry_failed_after: float = setting(60.0, duration(),
                                     "queue a block again this long after its transient retries ran out; 0: never")
    onliner: str = setting("auto", one_of("auto", "kernel", "hotplugd"),
                        "who onlines: auto (the kernel's own auto-online, set up by hotplugd, wherever its knobs "
                        "can express the policy; else hotplugd), kernel (refuse to start where they cannot), "
                        "hotplugd (always hotplugd; the kernel's auto-online kept off)")
    kernel_grace: float = setting(2.0, duration(),
                               "where the kernel onlines: how long the domain must have been quiet (no add or "
                               "online event of any block) before hotplugd onlines the blocks still offline")
    kernel_grace_max: float = setting(300.0, duration(),
                                   "where the kernel onlines: how long an added block may stay offline while the "
                                   "kernel's events keep coming before hotplugd onlines it anyway (>= kernel_grace)")
    kernel_phase_timeout: float = setting(60.0, duration(),
                                       "how long the seed's kernel may hold a block half-online before an alert")


@dataclass
class NodeZoneConfig:
    policy: str = setting("auto", one_of(*ZONE_POLICIES), "zone policy for this node")
    auto_movable_ratio: int = setting(301, number(0, 100000, int, _RATIO), "movable:kernel percent for auto-movable")


@dataclass
class DaxZoneConfig(NodeZoneConfig):
    """The zone policy of memory a dax device gives the kernel (CXL expanders, pmem as system-ram)."""

    policy: str = setting("movable", one_of(*ZONE_POLICIES),
                       "zone policy for dax devices' memory (movable: it can be given back, holds no kernel data)")


@dataclass
class ZoneConfig:
    policy: str = setting("auto", one_of(*ZONE_POLICIES), "auto | kernel | movable | auto-movable")
    auto_movable_ratio: int = setting(301, number(0, 100000, int, _RATIO),
                                   "movable:kernel percent for auto-movable (kernel default 301)")
    nodes: dict[str, NodeZoneConfig] = setting({}, nested(lambda v, k, p: _nodes(v, k, p)),
                                            "per-node overrides, [zones.nodes.N]")
    dax: DaxZoneConfig = field(default_factory=DaxZoneConfig, metadata={"help": "[zones.dax]: dax devices' memory"})

    def for_node(self, node: int) -> NodeZoneConfig:
        return self.nodes.get(str(node)) or NodeZoneConfig(self.policy, self.auto_movable_ratio)

    def for_block(self, node: int, source: str = "") -> NodeZoneConfig:
        """The policy of a block on ``node`` whose memory comes from ``source`` ("": ordinary hot-add)."""
        return self.dax if source.startswith("dax") else self.for_node(node)


@dataclass
class MetricsConfig:
    enabled: bool = setting(True, boolean, "serve Prometheus metrics")
    address: str = setting("127.0.0.1", text, "listen address (ignored when systemd hands a socket)")
    port: int = setting(DEFAULT_METRICS_PORT, number(0, 65535, int, "TCP ports are 16-bit"),
                     "listen port; 0 picks a free one")
    textfile: str = setting("", text, "also write a node_exporter textfile here after each phase")
    max_domains: int = setting(64, number(1, 100000, int,
                                          "each domain is a set of series: more would swamp Prometheus"),
                               "domains (guests) with their own `domain` label; later ones share domain=\"other\"")
    max_connections: int = setting(40, number(1, 10000, int),
                                   "connections open at once (as node_exporter's --web.max-requests); "
                                   "more wait in the backlog")
    read_timeout: float = setting(5.0, lambda value: number(0.01, 300)(parse_duration(value)),
                               "a request's head must arrive this soon after its connection, else it is closed")


@dataclass
class Config:
    backend: str = setting("", text,
                        "the backend, by the name its plugin registers "
                        "(`hotplugd plugins` lists them with what each onlines); "
                        "\"\" (none chosen): check and status read this host, run refuses (exit 78)")
    log_level: str = setting("info", one_of(*LOG_LEVELS), "debug | info | warning | error")
    log_format: str = setting("auto", one_of("auto", "json", "console"), "auto: JSON unless on a terminal")
    disabled_plugins: list[str] = setting([], string_list, "plugins never loaded (also HOTPLUGD_DISABLED_PLUGINS)")
    state_directory: str = setting("/var/lib/hotplugd", text,
                                "where hotplugd records the kernel's knobs as it found them (the unit's "
                                "StateDirectory=), for `hotplugd restore-knobs` to restore on uninstall")
    scheduler: SchedulerConfig = field(default_factory=SchedulerConfig)
    zones: ZoneConfig = field(default_factory=ZoneConfig)
    metrics: MetricsConfig = field(default_factory=MetricsConfig)
    plugins: dict[str, dict[str, Any]] = setting({}, nested(lambda v, k, p: _plugin_tables(v, k, p)),
                                              "[plugins.<name>] tables")
    #: Where it was read from (None: defaults only).
    source: Path | None = field(default=None, compare=False, metadata={"internal": True})


def _where(source: Path | None) -> str:
    return str(source) if source else "the command line"


def _build(cls: type, data: Mapping[str, Any], prefix: str, problems: list[ConfigProblem]) -> Any:
    kwargs, _ok = read_fields(cls, data, prefix.rstrip("."), problems)
    return cls(**kwargs)


def _nodes(value: Any, dotted: str, problems: list[ConfigProblem]) -> dict[str, NodeZoneConfig]:
    if not isinstance(value, dict):
        problems.append(ConfigProblem(dotted, "expected [zones.nodes.<N>] tables"))
        return {}
    nodes = {}
    for node, table in value.items():
        if not _NODE.fullmatch(str(node)) or not isinstance(table, dict):
            problems.append(ConfigProblem(f"{dotted}.{node}", "expected a node number with a table", "[zones.nodes.1]"))
        elif int(node) >= MAX_NUMNODES:
            problems.append(ConfigProblem(f"{dotted}.{node}", f"node numbers are below {MAX_NUMNODES}",
                                          "the kernel's MAX_NUMNODES is 1024 at most (NODES_SHIFT=10)"))
        else:
            nodes[node] = _build(NodeZoneConfig, table, f"{dotted}.{node}.", problems)
    return nodes


def _plugin_tables(value: Any, dotted: str, problems: list[ConfigProblem]) -> dict[str, Any]:
    """``[plugins.<name>]`` tables, passed on to their plugins only when every number in them fits TOML's 64 bits
    and is finite: no plugin should have to guard against 10^30 or NaN."""
    if not isinstance(value, dict):
        problems.append(ConfigProblem(dotted, "expected [plugins.<name>] tables",
                                      "[plugins.<name>], <name> a plugin `hotplugd plugins` lists"))
        return {}
    tables = {}
    for name, table in value.items():
        if not isinstance(table, dict):
            problems.append(ConfigProblem(f"{dotted}.{name}", f"expected a table, got {_show.repr(table)}",
                                          f"[{dotted}.{name}]"))
            continue
        bad = [(key, number) for key, number, _depth in _walk(table, f"{dotted}.{name}")
               if isinstance(number, float) and not math.isfinite(number)
               or isinstance(number, int) and not TOML_INT[0] <= number <= TOML_INT[1]]
        problems.extend(ConfigProblem(key, f"{_show.repr(number)} is not a setting",
                                      "numbers in a config are finite and fit in 64 bits") for key, number in bad)
        if not bad:
            tables[name] = table
    return tables


def _walk(value: Any, dotted: str = "", depth: int = 0) -> Iterator[tuple[str, Any, int]]:
    """(dotted key, value, depth) of ``value`` and of what it holds (list items as ``key[i]``), without
    recursion and without going below MAX_DEPTH + 1."""
    stack = [(dotted, value, depth)]
    while stack:
        key, item, level = stack.pop()
        yield key, item, level
        if level > MAX_DEPTH:
            continue
        if isinstance(item, dict):
            stack.extend((f"{key}.{k}" if key else str(k), v, level + 1) for k, v in item.items())
        elif isinstance(item, list):
            stack.extend((f"{key}[{i}]", v, level + 1) for i, v in enumerate(item))


def _too_deep(data: Mapping[str, Any]) -> list[ConfigProblem]:
    """A problem for each value nested past MAX_DEPTH tables and arrays (dotted keys and ``--set`` nest
    without brackets, so the text scan alone cannot see them); later stages may then recurse freely."""
    return [ConfigProblem(key, f"nested deeper than {MAX_DEPTH} tables or arrays", DEEP_HINT)
            for key, value, depth in _walk(data) if depth > MAX_DEPTH and isinstance(value, dict | list)]


def _inconsistent(config: Config) -> list[ConfigProblem]:
    """Values each valid on its own that contradict each other."""
    s = config.scheduler
    if s.kernel_grace_max < s.kernel_grace:
        return [ConfigProblem("scheduler.kernel_grace_max",
                              f"must be at least scheduler.kernel_grace ({s.kernel_grace:g} s), "
                              f"got {s.kernel_grace_max:g} s",
                              "it bounds the grace: the kernel gets kernel_grace of quiet, kernel_grace_max at most")]
    return []


def raise_problems(problems: list[ConfigProblem], source: Path | None) -> None:
    """Raise one ConfigError listing every problem, naming the file and each key."""
    if not problems:
        return
    lines = [f"{p.key}: {p.message}" + (f" ({p.hint})" if p.hint else "") for p in problems]
    raise ConfigError(
        f"invalid configuration in {_where(source)}:\n  " + "\n  ".join(lines),
        hint="hotplugd check-config validates a file without starting the daemon",
    )


def from_mapping(data: Mapping[str, Any], source: Path | None = None) -> Config:
    """Build and validate a Config from parsed TOML (plugin tables are checked later by hooks)."""
    raise_problems(_too_deep(data), source)  # before anything recurses into it
    problems: list[ConfigProblem] = []
    config = _build(Config, data, "", problems)
    config.source = source
    problems.extend(_inconsistent(config))
    raise_problems(problems, source)
    return config


def check_flag(flag: str, key: str, value: Any, text: str | None = None) -> Any:
    """``value`` (the flag's ``text`` as given) checked like the config key ``key`` it sets; a ConfigError
    naming ``flag`` (exit 78)."""
    data: dict[str, Any] = {}
    merge_override(data, key.split("."), value)
    problems: list[ConfigProblem] = []
    config = _build(Config, data, "", problems)
    if problems:
        shown = _show.repr(value if text is None else text)
        where = "" if problems[0].key == key else f"{problems[0].key}: "
        raise ConfigError(f"{flag} {shown}: {where}{problems[0].message}", hint=problems[0].hint or None)
    node: Any = config
    for part in key.split("."):  # the value as parsed (tables of tables, plugins': as given)
        node = node.get(part) if isinstance(node, dict) else getattr(node, part, None)
    return node


def load(path: Path | None, overrides: list[str] = ()) -> Config:
    """Read ``path`` (None: defaults only), apply ``KEY=VALUE`` overrides, validate."""
    data: dict[str, Any] = {}
    if path is not None:
        data = read_toml(path)
    for override in overrides:
        merge_override(data, *parse_override(override))
    return from_mapping(data, path)


def describe() -> list[tuple[str, Any, str]]:
    """Every documented key: (dotted key, default, help). Used by tests and docs."""
    return describe_table(Config, "") + describe_table(NodeZoneConfig, "zones.nodes.N.")
