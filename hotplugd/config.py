"""Configuration: TOML, overridden by CLI flags, validated with the key, file and a hint.

The schema is the dataclasses below; their field metadata carries the parser
for each value and its help text. ``config/hotplugd.toml`` documents every key.
"""

from __future__ import annotations

import dataclasses
import difflib
import os
import stat
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hotplugd.errors import ConfigError
from hotplugd.units import parse_duration, parse_size

DEFAULT_PATH = Path("/etc/hotplugd/hotplugd.toml")
DEFAULT_METRICS_PORT = 10964  # outside 9100-9999, which Prometheus's exporters have used up
LOG_LEVELS = ("debug", "info", "warning", "error")
ZONE_POLICIES = ("auto", "kernel", "movable", "auto-movable")


def _choice(*choices: str) -> Callable[[object], str]:
    def parse(value: object) -> str:
        if value not in choices:
            raise ValueError(f"expected one of {', '.join(choices)}; got {value!r}")
        return str(value)

    return parse


def _number(lo: float, hi: float | None = None, kind: type = float) -> Callable[[object], float]:
    def parse(value: object) -> float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ValueError(f"expected a number, got {value!r}")
        if kind is int and not isinstance(value, int):
            raise ValueError(f"expected a whole number, got {value!r}")
        if value < lo or (hi is not None and value > hi):
            bound = f"between {lo} and {hi}" if hi is not None else f"at least {lo}"
            raise ValueError(f"must be {bound}, got {value!r}")
        return kind(value)

    return parse


def _typed(kind: type) -> Callable[[object], Any]:
    def parse(value: object) -> Any:
        if not isinstance(value, kind) or (kind is not bool and isinstance(value, bool)):
            raise ValueError(f"expected a {kind.__name__}, got {value!r}")
        return value

    return parse


def _string_list(value: object) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ValueError(f"expected a list of strings, got {value!r}")
    return list(value)


def _opt(default: Any, parse: Callable[[object], Any], help: str) -> Any:
    if isinstance(default, list | dict):
        return field(default_factory=lambda: type(default)(default), metadata={"parse": parse, "help": help})
    return field(default=default, metadata={"parse": parse, "help": help})


@dataclass
class SchedulerConfig:
    parallel_hotplug_ratio: float = _opt(1.0, _number(0, 64), "final-phase workers per CPU of the node; 0: no deferral")
    defer: str = _opt("auto", _choice("auto", "always"),
                      "auto: defer only where the backend can online in parallel; always: defer whenever ratio > 0")
    settle: float = _opt(0.05, parse_duration, "start the phase when no add event came for this long")
    max_defer: float = _opt(2.0, parse_duration, "start the phase when the oldest block waited this long")
    max_offline_bytes: int = _opt(1 << 30, parse_size, "start the phase at once when this many bytes wait offline")
    max_memmap_share: float = _opt(0.05, _number(0, 1), "start at once when pending memmap exceeds this share of MemAvailable")
    max_pending_blocks: int = _opt(1 << 20, _number(1, kind=int), "queue bound; past it, events are dropped and a rescan follows")
    retries: int = _opt(5, _number(0, 100, int), "attempts after the first for EBUSY/ENOMEM")
    retry_backoff: float = _opt(0.01, parse_duration, "first retry delay; doubles each attempt")
    retry_failed_after: float = _opt(60.0, parse_duration,
                                     "queue a block again this long after its transient retries ran out; 0: never")


@dataclass
class NodeZoneConfig:
    policy: str = _opt("auto", _choice(*ZONE_POLICIES), "zone policy for this node")
    auto_movable_ratio: int = _opt(301, _number(0, 100000, int), "movable:kernel percent for auto-movable")


@dataclass
class ZoneConfig:
    policy: str = _opt("auto", _choice(*ZONE_POLICIES), "auto | kernel | movable | auto-movable")
    auto_movable_ratio: int = _opt(301, _number(0, 100000, int), "movable:kernel percent for auto-movable (kernel default 301)")
    nodes: dict[str, NodeZoneConfig] = field(default_factory=dict, metadata={"help": "per-node overrides, [zones.nodes.N]"})

    def for_node(self, node: int) -> NodeZoneConfig:
        return self.nodes.get(str(node)) or NodeZoneConfig(self.policy, self.auto_movable_ratio)


@dataclass
class MetricsConfig:
    enabled: bool = _opt(True, _typed(bool), "serve Prometheus metrics")
    address: str = _opt("127.0.0.1", _typed(str), "listen address (ignored when systemd hands a socket)")
    port: int = _opt(DEFAULT_METRICS_PORT, _number(0, 65535, int), "listen port; 0 picks a free one")
    textfile: str = _opt("", _typed(str), "also write a node_exporter textfile here after each phase")
    max_domains: int = _opt(64, _number(1, 100000, int),
                            "domains (guests) with their own `domain` label; later ones share domain=\"other\"")
    max_connections: int = _opt(40, _number(1, 10000, int),
                                "connections open at once (as node_exporter's --web.max-requests); more wait in the backlog")
    read_timeout: float = _opt(5.0, lambda value: _number(0.01, 300)(parse_duration(value)),
                               "a request's head must arrive this soon after its connection, else it is closed")


@dataclass
class Config:
    backend: str = _opt("simulated", _typed(str), "the backend that onlines blocks")
    log_level: str = _opt("info", _choice(*LOG_LEVELS), "debug | info | warning | error")
    log_format: str = _opt("auto", _choice("auto", "json", "console"), "auto: JSON unless on a terminal")
    disabled_plugins: list[str] = _opt([], _string_list, "plugins never loaded (also HOTPLUGD_DISABLED_PLUGINS)")
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
        if not isinstance(value, dict) or not all(isinstance(v, dict) for v in value.values()):
            problems.append(ConfigProblem(dotted, "expected [plugins.<name>] tables"))
            return {}
        return value
    if f.name == "nodes":
        if not isinstance(value, dict):
            problems.append(ConfigProblem(dotted, "expected [zones.nodes.<N>] tables"))
            return {}
        nodes = {}
        for node, table in value.items():
            if not str(node).isdigit() or not isinstance(table, dict):
                problems.append(ConfigProblem(f"{dotted}.{node}", "expected a node number with a table", "[zones.nodes.1]"))
                continue
            nodes[str(node)] = _build(NodeZoneConfig, table, f"{dotted}.{node}.", problems)
        return nodes
    if isinstance(f.default_factory, type) and dataclasses.is_dataclass(f.default_factory):
        if not isinstance(value, dict):
            problems.append(ConfigProblem(dotted, f"expected a table [{dotted}]"))
            return f.default_factory()
        return _build(f.default_factory, value, dotted + ".", problems)
    try:
        return f.metadata["parse"](value)
    except ValueError as exc:
        problems.append(ConfigProblem(dotted, str(exc), f"see config/hotplugd.toml for {dotted}"))
        return f.default if f.default is not dataclasses.MISSING else f.default_factory()


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
    problems: list[ConfigProblem] = []
    config = _build(Config, data, "", problems)
    config.source = source
    raise_problems(problems, source)
    return config


def check_file_permissions(path: Path) -> None:
    """When running as root, refuse a config file that other users can write."""
    if os.geteuid() != 0:
        return
    st = path.stat()
    if st.st_mode & (stat.S_IWOTH | stat.S_IWGRP) or st.st_uid != 0:
        raise ConfigError(
            f"refusing {path}: it is writable by users other than root (mode {stat.filemode(st.st_mode)}, uid {st.st_uid})",
            hint=f"chown root:root {path} && chmod 644 {path}",
        )


def read_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as fh:
            return tomllib.load(fh)
    except FileNotFoundError:
        raise ConfigError(f"config file {path} does not exist", hint="pass --config or create it") from None
    except PermissionError:
        raise ConfigError(f"cannot read config file {path}: permission denied") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path} is not valid TOML: {exc}") from None


def parse_override(text: str) -> tuple[list[str], Any]:
    """``scheduler.settle=0.1`` → (["scheduler", "settle"], 0.1); values are TOML, else strings."""
    key, sep, raw = text.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"--set {text!r}: expected KEY=VALUE", hint="e.g. --set scheduler.settle=0.1")
    try:
        value = tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw
    return key.strip().split("."), value


def merge_override(data: dict[str, Any], path: list[str], value: Any) -> None:
    node = data
    for part in path[:-1]:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise ConfigError(f"--set {'.'.join(path)}: {part} is not a table")
    node[path[-1]] = value


def load(path: Path | None, overrides: list[str] = ()) -> Config:
    """Read ``path`` (None: defaults only), apply ``KEY=VALUE`` overrides, validate."""
    data: dict[str, Any] = {}
    if path is not None:
        check_file_permissions_if_exists(path)
        data = read_toml(path)
    for text in overrides:
        merge_override(data, *parse_override(text))
    return from_mapping(data, path)


def check_file_permissions_if_exists(path: Path) -> None:
    if path.exists():
        check_file_permissions(path)


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
