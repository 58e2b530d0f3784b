"""The simulated host's settings: the ``[plugins.simulated]`` table, validated."""

from __future__ import annotations

import errno
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from hotplugd import EHWPOISON, ConfigProblem, parse_duration, parse_size

LOCKS = ("global", "per-node", "none")
STEP_KINDS = ("dimm", "virtio-mem", "remove")
FAULTS = {"EBUSY": errno.EBUSY, "ENOMEM": errno.ENOMEM, "EINVAL": errno.EINVAL,
          "EHWPOISON": EHWPOISON, "ENOENT": errno.ENOENT}


@dataclass(frozen=True)
class Step:
    """One hot-plug step of a scenario."""

    kind: str  # dimm | virtio-mem | remove
    size: int = 0  # bytes added (dimm, virtio-mem)
    node: int = 0
    at: float = 0.0  # seconds after the start of the scenario
    count: int = 0  # blocks removed (remove)


@dataclass(frozen=True)
class Settings:
    nodes: int = 2
    cpus_per_node: int = 4
    block_size: int = 128 << 20
    boot_memory: int = 4 << 30  # per node, online at start
    offline_at_start: int = 0  # per node, present but offline at start (coldplug)
    mem_available: int = 16 << 30
    lock: str = "none"  # a kernel that onlines in parallel; "global" is mainline
    concurrency: int | None = None  # declared; default follows the lock model
    cost_fixed: float = 100e-6  # seconds per online call
    cost_init_per_page: float = 30e-9  # __init_single_page
    cost_free_per_page: float = 15e-9  # __free_pages_core
    add_interval: float = 200e-6  # between two add events of one burst
    fault_rate: float = 0.0
    fault_errnos: tuple[int, ...] = (errno.EBUSY,)
    seed: int = 1
    scenario: tuple[Step, ...] = field(default_factory=lambda: DEFAULT_SCENARIO)
    #: Keep the host's blocks in this file across daemon restarts ("": the host lives and dies with the process).
    state_file: str = ""

    @property
    def declared_concurrency(self) -> int:
        if self.concurrency is not None:
            return self.concurrency
        return {"global": 1, "per-node": self.nodes}.get(self.lock, self.nodes * self.cpus_per_node)

    def block_cost(self) -> float:
        pages = self.block_size // 4096
        return self.cost_fixed + pages * (self.cost_init_per_page + self.cost_free_per_page)


#: The embedded default: a 16 GiB DIMM burst on node 0, then virtio-mem growing 8 GiB on node 1.
DEFAULT_SCENARIO = (Step("dimm", size=16 << 30, node=0), Step("virtio-mem", size=8 << 30, node=1))

_SCALARS: dict[str, Any] = {
    "nodes": ("int", 1), "cpus_per_node": ("int", 1), "block_size": ("size", 4096), "boot_memory": ("size", 0),
    "offline_at_start": ("size", 0), "mem_available": ("size", 0), "cost_fixed": ("duration", 0),
    "cost_init_per_page": ("duration", 0), "cost_free_per_page": ("duration", 0), "add_interval": ("duration", 0),
    "fault_rate": ("rate", 0), "seed": ("int", 0), "concurrency": ("int", 1),
}


def _scalar(kind: str, lo: float, value: Any) -> Any:
    if kind == "size":
        out = parse_size(value)
    elif kind == "duration":
        out = parse_duration(value)
    elif kind == "rate":
        if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= 1:
            raise ValueError(f"expected a rate between 0 and 1, got {value!r}")
        return float(value)
    else:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"expected a whole number, got {value!r}")
        out = value
    if out < lo:
        raise ValueError(f"must be at least {lo}, got {value!r}")
    return out


def _step(raw: Any, key: str, problems: list[ConfigProblem]) -> Step | None:
    if not isinstance(raw, Mapping):
        problems.append(ConfigProblem(key, "expected a table with kind = dimm | virtio-mem | remove"))
        return None
    unknown = set(raw) - {"kind", "size", "node", "at", "count"}
    if unknown:
        problems.append(ConfigProblem(key, f"unknown keys {sorted(unknown)}", "a step has kind, size, node, at, count"))
    kind = raw.get("kind")
    if kind not in STEP_KINDS:
        problems.append(ConfigProblem(f"{key}.kind", f"expected one of {', '.join(STEP_KINDS)}, got {kind!r}"))
        return None
    try:
        return Step(kind, parse_size(raw.get("size", 0)), _scalar("int", 0, raw.get("node", 0)),
                    parse_duration(raw.get("at", 0)), _scalar("int", 0, raw.get("count", 0)))
    except ValueError as exc:
        problems.append(ConfigProblem(key, str(exc)))
        return None


def parse(table: Mapping[str, Any], problems: list[ConfigProblem] | None = None) -> Settings:
    """Settings from the plugin's table; problems are appended (or raised as ValueError when not collected)."""
    collect: list[ConfigProblem] = [] if problems is None else problems
    kwargs: dict[str, Any] = {}
    for key, value in table.items():
        dotted = f"plugins.simulated.{key}"
        try:
            if key in _SCALARS:
                kwargs[key] = _scalar(*_SCALARS[key], value)
            elif key == "lock":
                if value not in LOCKS:
                    raise ValueError(f"expected one of {', '.join(LOCKS)}, got {value!r}")
                kwargs[key] = value
            elif key == "fault_errnos":
                names = [value] if isinstance(value, str) else value
                bad = [n for n in names if n not in FAULTS] if isinstance(names, list) else [names]
                if bad or not names:
                    raise ValueError(f"expected errno names from {', '.join(FAULTS)}, got {value!r}")
                kwargs[key] = tuple(FAULTS[n] for n in names)
            elif key == "state_file":
                if not isinstance(value, str):
                    raise ValueError(f"expected a file path, got {value!r}")
                kwargs[key] = value
            elif key == "scenario":
                if not isinstance(value, list):
                    raise ValueError("expected an array of tables: [[plugins.simulated.scenario]]")
                steps = [_step(raw, f"{dotted}[{i}]", collect) for i, raw in enumerate(value)]
                kwargs[key] = tuple(s for s in steps if s is not None)
            else:
                known = [*_SCALARS, "lock", "fault_errnos", "scenario", "state_file"]
                collect.append(ConfigProblem(dotted, "unknown key", f"known keys: {', '.join(known)}"))
        except ValueError as exc:
            collect.append(ConfigProblem(dotted, str(exc)))
    settings = Settings(**kwargs)
    if settings.block_size & (settings.block_size - 1):
        collect.append(ConfigProblem("plugins.simulated.block_size", "must be a power of two"))
    if problems is None and collect:
        raise ValueError("; ".join(f"{p.key}: {p.message}" for p in collect))
    return settings
