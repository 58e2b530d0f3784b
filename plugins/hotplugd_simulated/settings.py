"""The simulated host's settings: the ``[plugins.simulated]`` table, validated."""

from __future__ import annotations

import errno
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from hotplugd import (
    EHWPOISON,
    KNOB_NAMES,
    ConfigProblem,
    boolean,
    duration,
    nested,
    number,
    one_of,
    parse_duration,
    parse_size,
    read_table,
    setting,
    size,
    whole,
)

from .kernels import KERNELS, Costs, kernel_workers

LOCKS = ("global", "per-node", "none")
#: The largest machine Linux builds for (x86-64 MAXSMP): CONFIG_NODES_SHIFT=10, NR_CPUS=8192;
#: and all memory must fit a 64-bit physical address space.
MAX_NUMNODES = 1 << 10
NR_CPUS = 8192
MAX_MEMORY = 1 << 64
#: The most blocks a simulated host holds (boot, coldplug and the scenario together): each is an object
#: of the host and of the daemon's book, and a real hot-add of 2^20 blocks takes an hour to online.
MAX_BLOCKS = 1 << 20
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


#: The embedded default: a 16 GiB DIMM burst on node 0, then virtio-mem growing 8 GiB on node 1.
DEFAULT_SCENARIO = (Step("dimm", size=16 << 30, node=0), Step("virtio-mem", size=8 << 30, node=1))


def _errnos(value: Any) -> tuple[int, ...]:
    names = [value] if isinstance(value, str) else value
    bad = [n for n in names if n not in FAULTS] if isinstance(names, list) else [names]
    if bad or not names:
        raise ValueError(f"expected errno names from {', '.join(FAULTS)}, got {value!r}")
    return tuple(FAULTS[n] for n in names)


def _knobs(value: Any) -> tuple[str, ...]:
    if not isinstance(value, list) or any(v not in KNOB_NAMES for v in value):
        raise ValueError(f"expected a list of knob names from {', '.join(KNOB_NAMES)}, got {value!r}")
    return tuple(value)


def _file(value: Any) -> str:
    if not isinstance(value, str):
        raise ValueError(f"expected a file path, got {value!r}")
    return value


@nested
def _scenario(value: Any, dotted: str, problems: list[ConfigProblem]) -> tuple[Step, ...]:
    if not isinstance(value, list):
        problems.append(ConfigProblem(dotted, "expected an array of tables: [[plugins.simulated.scenario]]"))
        return DEFAULT_SCENARIO
    steps = [_step(raw, f"{dotted}[{i}]", problems) for i, raw in enumerate(value)]
    return tuple(s for s in steps if s is not None)


_SIZE = "4096 bytes at least: the smallest page"
_COUNT = whole(0, None)


@dataclass(frozen=True)
class Settings:
    nodes: int = setting(2, whole(1, None), "NUMA nodes")
    cpus_per_node: int = setting(4, whole(1, None), "CPUs of each node")
    block_size: int = setting(128 << 20, size(4096, None, _SIZE), "memory block size (a power of two)")
    boot_memory: int = setting(4 << 30, size(0, None), "per node, online at start")
    offline_at_start: int = setting(0, size(0, None), "per node, present but offline at start (coldplug)")
    mem_available: int = setting(16 << 30, size(0, None), "MemAvailable")
    kernel: str = setting("mainline", one_of(*KERNELS), "mainline | per-block | anolis (kernels.py)")
    #: The kernel's own parallel_hotplug_ratio at boot, percent of a node's CPUs (per-block and anolis;
    #: a knob the plan sets). 0, as the seed's kernel boots: no deferral.
    kernel_ratio: int = setting(0, _COUNT, "the kernel's own parallel_hotplug_ratio at boot, percent of a node's CPUs")
    #: auto_online_blocks at boot: the kernel onlines added blocks itself; on anolis this is what
    #: runs the final phase (its driver calls deferred_online_memory after a request). The plan
    #: sets it at start, as on a real host.
    auto_online: bool = setting(False, boolean, "auto_online_blocks at boot: the kernel onlines added blocks itself")
    #: Knobs hotplugd cannot write (a read-only /sys): the plan then keeps or takes the onlining.
    read_only_knobs: tuple[str, ...] = setting((), _knobs, "knobs hotplugd cannot write (a read-only /sys)")
    #: "global": every real kernel's device_hotplug_lock. "none" and
    #: "per-node" are idealised kernels for the engine's parallel-phase tests and bench/parallel.py.
    lock: str = setting("global", one_of(*LOCKS), "global (every real kernel) | per-node | none (idealised)")
    concurrency: int | None = setting(None, whole(1, None), "declared; default follows the lock model")
    #: Costs fitted to the guest's 6.1 kernel (bench/README.md): 3.1 ms a 128 MiB block.
    cost_fixed: float = setting(400e-6, duration(0, None), "seconds per online call: lock, spans, notifiers")
    cost_init_per_page: float = setting(55e-9, duration(0, None), "__init_single_page")
    cost_free_per_page: float = setting(27.5e-9, duration(0, None), "__free_pages_core")
    #: Queueing page work on a node's CPUs and joining it (per block on per-block, per phase on anolis).
    cost_setup: float = setting(5.6e-3, duration(0, None), "queueing page work on a node's CPUs and joining it")
    #: Added to each online per GiB already online: the guest's onlines slow down as it grows
    #: (fitted per run by tests/vm/test_parity.py; 0 by default: not measured on real hardware).
    cost_per_online_gib: float = setting(0.0, duration(0, None), "added to each online per GiB already online")
    add_interval: float = setting(200e-6, duration(0, None), "between two add events of one burst")
    fault_rate: float = setting(0.0, number(0, 1), "share of online calls that fail")
    fault_errnos: tuple[int, ...] = setting((errno.EBUSY,), _errnos, "errno names the faults draw from")
    seed: int = setting(1, _COUNT, "the faults' random seed")
    scenario: tuple[Step, ...] = setting(DEFAULT_SCENARIO, _scenario, "[[plugins.simulated.scenario]] steps")
    #: Keep the host's blocks in this file across daemon restarts ("": the host lives and dies with the process).
    state_file: str = setting("", _file, "keep the host's blocks in this file across daemon restarts")

    @property
    def lock_model(self) -> str:
        return self.lock

    @property
    def declared_concurrency(self) -> int:
        if self.concurrency is not None:
            return self.concurrency
        return {"global": 1, "per-node": self.nodes}.get(self.lock_model, self.nodes * self.cpus_per_node)

    def costs(self, block_size: int | None = None) -> Costs:
        """This kernel's costs for ``block_size`` (default: the host's)."""
        return Costs(self.kernel, block_size or self.block_size, self.cost_fixed,
                     self.cost_init_per_page + self.cost_free_per_page, self.cost_setup)

    def block_cost(self) -> float:
        """One block onlined the normal way (serially)."""
        return self.costs().serial

    @property
    def workers(self) -> int:
        """Workers per node of the kernel's own parallel onlining (per-block, anolis)."""
        return kernel_workers(self.cpus_per_node, self.kernel_ratio)


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
        return Step(kind, parse_size(raw.get("size", 0)), _COUNT(raw.get("node", 0)),
                    parse_duration(raw.get("at", 0)), _COUNT(raw.get("count", 0)))
    except ValueError as exc:
        problems.append(ConfigProblem(key, str(exc)))
        return None


def _machine_bounds(s: Settings) -> list[ConfigProblem]:
    """Sizes no machine has: more nodes or CPUs than Linux builds for, more memory than 64 bits address."""
    out = []
    if s.nodes > MAX_NUMNODES:
        out.append(ConfigProblem("plugins.simulated.nodes", f"{s.nodes} nodes: Linux has at most {MAX_NUMNODES} "
                                 "(MAX_NUMNODES, CONFIG_NODES_SHIFT=10)"))
    elif s.nodes * s.cpus_per_node > NR_CPUS:
        out.append(ConfigProblem("plugins.simulated.cpus_per_node",
                                 f"{s.nodes} nodes x {s.cpus_per_node} CPUs: Linux has at most {NR_CPUS} CPUs "
                                 "(NR_CPUS with MAXSMP)"))
    if s.kernel_ratio > 100:
        out.append(ConfigProblem("plugins.simulated.kernel_ratio",
                                 f"percent of a node's CPUs, 0 to 100, got {s.kernel_ratio}"))
    booted = min(s.nodes, MAX_NUMNODES) * (s.boot_memory + s.offline_at_start)
    added = sum(step.size for step in s.scenario if step.kind != "remove")
    blocks = min(s.nodes, MAX_NUMNODES) * (s.boot_memory // s.block_size + s.offline_at_start // s.block_size) + sum(
        step.size // s.block_size for step in s.scenario if step.kind != "remove")
    if booted + added <= MAX_MEMORY and blocks > MAX_BLOCKS:
        key = "boot_memory" if booted // s.block_size > MAX_BLOCKS else "scenario"
        out.append(ConfigProblem(f"plugins.simulated.{key}", f"{blocks} blocks of {s.block_size} bytes: the simulated "
                                 f"host holds at most {MAX_BLOCKS}",
                                 "fewer or larger blocks; `simulate --from-host --size` computes larger hot-adds"))
    if booted + added > MAX_MEMORY:
        key = "boot_memory" if booted > MAX_MEMORY else "scenario"
        out.append(ConfigProblem(f"plugins.simulated.{key}", f"{(booted + added) // s.block_size} blocks of "
                                 f"{s.block_size} bytes: more than a 64-bit physical address space holds",
                                 "nodes x (boot_memory + offline_at_start) + the scenario's sizes: at most 16 EiB"))
    return out


def _check(settings: Settings) -> list[ConfigProblem]:
    out = []
    if settings.block_size & (settings.block_size - 1):
        out.append(ConfigProblem("plugins.simulated.block_size", "must be a power of two"))
    return out + _machine_bounds(settings)


def parse(table: Mapping[str, Any], problems: list[ConfigProblem] | None = None) -> Settings:
    """Settings from the plugin's table; problems are appended (or raised as one ConfigError, a ValueError too)."""
    return read_table(Settings, table, "plugins.simulated", problems, check=_check)
