"""Configuration: TOML, overridden by CLI flags, validated with the key, file and a hint.

The schema is the dataclasses below; their field metadata carries the parser
for each value and its help text. ``config/hotplugd.toml`` (installed as
``/etc/hotplugd/hotplugd.toml``) documents every key; errors carry the key's help.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hotplugd.errors import ConfigError
from hotplugd.tomlfile import DEEP_HINT, MAX_DEPTH, merge_override, parse_override, read_toml
from hotplugd.tomlfile import SHOW as _show
from hotplugd.units import parse_duration, parse_size

DEFAULT_PATH = Path("/etc/hotplugd/hotplugd.toml")
DEFAULT_METRICS_PORT = 10964  # outside 9100-9999, which Prometheus's exporters have used up
LOG_LEVELS = ("debug", "info", "warning", "error")
ZONE_POLICIES = ("auto", "kernel", "movable", "auto-movable")

# Bounds on what a user can ask for: past them no machine exists, so the value is a typo.
#: The kernel's MAX_NUMNODES with its largest NODES_SHIFT (10): node numbers are below it.
MAX_NUMNODES = 1 << 10
#: Bytes of a 64-bit physical address space.
MAX_BYTES = 1 << 64
#: Memory blocks (128 MiB, the smallest x86-64 and arm64 block) a 64-bit address space holds.
MAX_BLOCKS = MAX_BYTES // (128 << 20)
#: A day: deferring or waiting longer than that leaves hot-added memory offline for good.
MAX_SECONDS = 86_400
#: TOML integers are signed 64-bit (tomllib accepts any size); plugin tables are held to that.
TOML_INT = (-(1 << 63), (1 << 63) - 1)



_NODE = re.compile(r"0|[1-9][0-9]{0,9}")  # "01" would never match node 1: refused
_DAY = "a day: waiting longer leaves hot-added memory offline for good"
_BLOCKS = "2^64 / 128 MiB: the memory blocks a 64-bit physical address space holds"
_RATIO = "movable memory 1000 times the kernel's could never be managed"


class OutOfBounds(ValueError):
    """A value of the right kind past its bound; ``hint`` says why the bound is there."""

    def __init__(self, message: str, hint: str) -> None:
        super().__init__(message)
        self.hint = hint


def _choice(*choices: str) -> Callable[[object], str]:
    def parse(value: object) -> str:
        if value not in choices:
            raise ValueError(f"expected one of {', '.join(choices)}; got {_show.repr(value)}")
        return str(value)

    return parse


def _number(lo: float, hi: float, kind: type = float, why: str = "") -> Callable[[object], float]:
    def parse(value: object) -> float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ValueError(f"expected a number, got {_show.repr(value)}")
        if kind is int and not isinstance(value, int):
            raise ValueError(f"expected a whole number, got {_show.repr(value)}")
        return kind(_bounded(value, lo, hi, why))

    return parse


def _bounded(value: Any, lo: float, hi: float, why: str) -> Any:
    """``value`` if ``lo <= value <= hi`` (never NaN), else OutOfBounds with ``why`` as its hint."""
    if not lo <= value <= hi:
        raise OutOfBounds(f"must be between {lo} and {hi}, got {_show.repr(value)}", why)
    return value


def _unit(parse: Callable[[object], Any], hi: float, why: str) -> Callable[[object], Any]:
    """A size or duration parser (hotplugd.units) held to ``hi``."""
    def bounded(value: object) -> Any:
        try:
            return _bounded(parse(value), 0, hi, why)
        except OverflowError:  # "1e999GiB": a float past its range, made an int
            raise OutOfBounds(f"must be between 0 and {hi}, got {_show.repr(value)}", why) from None

    return bounded


def _duration() -> Callable[[object], float]:
    return _unit(parse_duration, MAX_SECONDS, _DAY)


def _typed(kind: type) -> Callable[[object], Any]:
    def parse(value: object) -> Any:
        if not isinstance(value, kind) or (kind is not bool and isinstance(value, bool)):
            raise ValueError(f"expected a {kind.__name__}, got {_show.repr(value)}")
        return value

    return parse


def _string_list(value: object) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ValueError(f"expected a list of strings, got {_show.repr(value)}")
    return list(value)


def _opt(default: Any, parse: Callable[[object], Any], help: str) -> Any:
    if isinstance(default, list | dict):
        return field(default_factory=lambda: type(default)(default), metadata={"parse": parse, "help": help})
    return field(default=default, metadata={"parse": parse, "help": help})


@dataclass
class SchedulerConfig:
    parallel_hotplug_ratio: float = _opt(1.0, _number(0, 64, why="64 per CPU: far past any kernel's parallelism"),
                                         "final-phase workers per CPU of the node; 0: no deferral")
    defer: str = _opt("auto", _choice("auto", "always"),
                      "auto: defer only where the backend can online in parallel; always: defer whenever ratio > 0")
    settle: float = _opt(0.05, _duration(), "start the phase when no add event came for this long")
    max_defer: float = _opt(2.0, _duration(), "start the phase when the oldest block waited this long")
    max_offline_bytes: int = _opt(1 << 30, _unit(parse_size, MAX_BYTES, "2^64 bytes: a 64-bit physical address space"),
                                  "start the phase at once when this many bytes wait offline")
    max_memmap_share: float = _opt(0.05, _number(0, 1, why="a share of MemAvailable"),
                                   "start at once when pending memmap exceeds this share of MemAvailable")
    max_pending_blocks: int = _opt(1 << 20, _number(1, MAX_BLOCKS, int, _BLOCKS),
                                   "queue bound; past it, events are dropped and a rescan follows")
    retries: int = _opt(5, _number(0, 100, int, "the backoff doubles each attempt: 100 is already forever"),
                        "attempts after the first for EBUSY/ENOMEM")
    retry_backoff: float = _opt(0.01, _duration(), "first retry delay; doubles each attempt")
    retry_failed_after: float = _opt(60.0, _duration(),
                                     "queue a block again this long after its transient retries ran out; 0: never")
    onliner: str = _opt("auto", _choice("auto", "kernel", "hotplugd"),
                        "who onlines: auto (the kernel's own auto-online, set up by hotplugd, wherever its knobs "
                        "can express the policy; else hotplugd), kernel (refuse to start where they cannot), "
                        "hotplugd (always hotplugd; the kernel's auto-online kept off)")
    kernel_grace: float = _opt(2.0, _duration(),
                               "where the kernel onlines: how long the domain must have been quiet (no add or "
                               "online event of any block) before hotplugd onlines the blocks still offline")
    kernel_grace_max: float = _opt(300.0, _duration(),
                                   "where the kernel onlines: how long an added block may stay offline while the "
                                   "kernel's events keep coming before hotplugd onlines it anyway (>= kernel_grace)")
    kernel_phase_timeout: float = _opt(60.0, _duration(),
                                       "how long the seed's kernel may hold a block half-online before an alert")


@dataclass
class NodeZoneConfig:
    policy: str = _opt("auto", _choice(*ZONE_POLICIES), "zone policy for this node")
    auto_movable_ratio: int = _opt(301, _number(0, 100000, int, _RATIO), "movable:kernel percent for auto-movable")


@dataclass
class DaxZoneConfig(NodeZoneConfig):
    """The zone policy of memory a dax device gives the kernel (CXL expanders, pmem as system-ram)."""

    policy: str = _opt("movable", _choice(*ZONE_POLICIES),
                       "zone policy for dax devices' memory (movable: it can be given back, holds no kernel data)")


@dataclass
class ZoneConfig:
    policy: str = _opt("auto", _choice(*ZONE_POLICIES), "auto | kernel | movable | auto-movable")
    auto_movable_ratio: int = _opt(301, _number(0, 100000, int, _RATIO),
                                   "movable:kernel percent for auto-movable (kernel default 301)")
    nodes: dict[str, NodeZoneConfig] = field(default_factory=dict, metadata={"help": "per-node overrides, [zones.nodes.N]"})
    dax: DaxZoneConfig = field(default_factory=DaxZoneConfig, metadata={"help": "[zones.dax]: dax devices' memory"})

    def for_node(self, node: int) -> NodeZoneConfig:
        return self.nodes.get(str(node)) or NodeZoneConfig(self.policy, self.auto_movable_ratio)

    def for_block(self, node: int, source: str = "") -> NodeZoneConfig:
        """The policy of a block on ``node`` whose memory comes from ``source`` ("": ordinary hot-add)."""
        return self.dax if source.startswith("dax") else self.for_node(node)


@dataclass
class MetricsConfig:
    enabled: bool = _opt(True, _typed(bool), "serve Prometheus metrics")
    address: str = _opt("127.0.0.1", _typed(str), "listen address (ignored when systemd hands a socket)")
    port: int = _opt(DEFAULT_METRICS_PORT, _number(0, 65535, int, "TCP ports are 16-bit"),
                     "listen port; 0 picks a free one")
    textfile: str = _opt("", _typed(str), "also write a node_exporter textfile here after each phase")
    max_domains: int = _opt(64, _number(1, 100000, int, "each domain is a set of series: more would swamp Prometheus"),
                            "domains (guests) with their own `domain` label; later ones share domain=\"other\"")
    max_connections: int = _opt(40, _number(1, 10000, int),
                                "connections open at once (as node_exporter's --web.max-requests); more wait in the backlog")
    read_timeout: float = _opt(5.0, lambda value: _number(0.01, 300)(parse_duration(value)),
                               "a request's head must arrive this soon after its connection, else it is closed")


@dataclass
class Config:
    backend: str = _opt("", _typed(str),
                        "the backend: sysfs (this host's memory), simulated (a modelled host), qga (guests); "
                        "\"\" (none chosen): check and status read this host, run refuses (exit 78)")
    log_level: str = _opt("info", _choice(*LOG_LEVELS), "debug | info | warning | error")
    log_format: str = _opt("auto", _choice("auto", "json", "console"), "auto: JSON unless on a terminal")
    disabled_plugins: list[str] = _opt([], _string_list, "plugins never loaded (also HOTPLUGD_DISABLED_PLUGINS)")
    state_directory: str = _opt("/var/lib/hotplugd", _typed(str),
                                "where hotplugd records the kernel's knobs as it found them (the unit's "
                                "StateDirectory=), for `hotplugd restore-knobs` to restore on uninstall")
    scheduler: SchedulerConfig = field(default_factory=SchedulerConfig)
    zones: ZoneConfig = field(default_factory=ZoneConfig)
    metrics: MetricsConfig = field(default_factory=MetricsConfig)
    plugins: dict[str, dict[str, Any]] = field(default_factory=dict, metadata={"help": "[plugins.<name>] tables"})
    #: Where it was read from (None: defaults only).
    source: Path | None = field(default=None, compare=False, metadata={"internal": True})


@dataclass(frozen=True)
class ConfigProblem:
    """One thing wrong in a config: the dotted key, what is wrong, and how to fix it."""

    key: str
    message: str
    hint: str = ""


def _where(source: Path | None) -> str:
    return str(source) if source else "the command line"


def _build(cls: type, data: Mapping[str, Any], prefix: str, problems: list[ConfigProblem]) -> Any:
    fields = {f.name: f for f in dataclasses.fields(cls) if not f.metadata.get("internal")}
    kwargs: dict[str, Any] = {}
    for key, value in data.items():
        dotted = f"{prefix}{key}"
        f = fields.get(key)
        if f is None:
            close = difflib.get_close_matches(key, fields, n=1)
            hint = f"did you mean {prefix}{close[0]}?" if close else f"known keys: {', '.join(fields)}"
            problems.append(ConfigProblem(dotted, "unknown key", hint))
            continue
        kwargs[key] = _value(f, value, dotted, problems)
    return cls(**kwargs)


def _value(f: dataclasses.Field, value: Any, dotted: str, problems: list[ConfigProblem]) -> Any:
    if f.name == "plugins":
        return _plugin_tables(value, dotted, problems)
    if f.name == "nodes":
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
    if isinstance(f.default_factory, type) and dataclasses.is_dataclass(f.default_factory):
        if not isinstance(value, dict):
            problems.append(ConfigProblem(dotted, f"expected a table [{dotted}]"))
            return f.default_factory()
        return _build(f.default_factory, value, dotted + ".", problems)
    try:
        return f.metadata["parse"](value)
    except ValueError as exc:
        hint = getattr(exc, "hint", None) or _key_help(f)
        message = str(exc)  # hotplugd.units repeats the value whole: clip it
        problems.append(ConfigProblem(dotted, message if len(message) <= 200 else message[:200] + "...", hint))
        return f.default if f.default is not dataclasses.MISSING else f.default_factory()


def _key_help(f: dataclasses.Field) -> str:
    """What a key is and its default, for an error about it (no file to look up: it may not be installed)."""
    default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
    return f"{f.name}: {f.metadata.get('help', '')}; default {_show.repr(default)}"


def _plugin_tables(value: Any, dotted: str, problems: list[ConfigProblem]) -> dict[str, Any]:
    """``[plugins.<name>]`` tables, passed on to their plugins only when every number in them fits TOML's 64 bits
    and is finite: no plugin should have to guard against 10^30 or NaN."""
    if not isinstance(value, dict):
        problems.append(ConfigProblem(dotted, "expected [plugins.<name>] tables", "[plugins.simulated]"))
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
    for text in overrides:
        merge_override(data, *parse_override(text))
    return from_mapping(data, path)


def describe() -> list[tuple[str, Any, str]]:
    """Every documented key: (dotted key, default, help). Used by tests and docs."""
    rows: list[tuple[str, Any, str]] = []

    def walk(cls: type, prefix: str) -> None:
        instance = cls()
        for f in dataclasses.fields(cls):
            if f.metadata.get("internal"):
                continue
            value = getattr(instance, f.name)
            if dataclasses.is_dataclass(value):
                walk(type(value), f"{prefix}{f.name}.")
            else:
                rows.append((f"{prefix}{f.name}", value, f.metadata.get("help", "")))

    walk(Config, "")
    walk(NodeZoneConfig, "zones.nodes.N.")
    return rows
