"""``hotplugd simulate --from-host [SYSFS_ROOT]``: this host's shape, and how long a hot-add would take on each kernel.

Answers "what ``parallel_hotplug_ratio`` should I boot with?" before a fleet is rebooted.
The shape (nodes, CPUs per node, block size, present memory) is read from sysfs, read
only: files are opened for reading and nothing under the root is ever written. The times
are computed by this plugin's kernel models (:mod:`.predict`).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from hotplugd import ConfigError, format_bytes, parse_size

from .backend import SimulatedBackend
from .settings import parse

RATIOS = (0.0, 0.25, 0.5, 1.0)
LABELS = {("mainline", False): "mainline", ("per-block", False): "per-block parallel",
          ("anolis", False): "seed's (anolis)", ("anolis", True): "seed's, 1 GiB bound"}


@dataclass(frozen=True)
class HostShape:
    """What the predictions need of a host."""

    cpus: tuple[int, ...]  # per node, in node order
    block_size: int
    memory: int  # present memory blocks x block size

    @property
    def nodes(self) -> int:
        return len(self.cpus)


def count_cpus(cpulist: str) -> int:
    """CPUs in a sysfs cpulist (``0-3,8-11``; empty for a memory-only node)."""
    total = 0
    for part in cpulist.strip().split(","):
        if part:
            lo, _, hi = part.partition("-")
            total += int(hi or lo) - int(lo) + 1
    return total


def read_shape(root: Path) -> HostShape:
    """The host's shape under ``root`` (``/sys`` or a copy of it); ConfigError naming what is missing."""
    memory_dir = root / "devices/system/memory"
    try:
        block_size = int((memory_dir / "block_size_bytes").read_text().strip(), 16)
        blocks = sum(1 for name in os.listdir(memory_dir) if name.startswith("memory") and name[6:].isdigit())
        node_dir = root / "devices/system/node"
        nodes = sorted(int(n[4:]) for n in os.listdir(node_dir) if n.startswith("node") and n[4:].isdigit())
        cpus = tuple(count_cpus((node_dir / f"node{n}" / "cpulist").read_text()) for n in nodes)
    except (OSError, ValueError) as exc:
        raise ConfigError(f"--from-host {root}: not a sysfs tree with memory blocks and NUMA nodes ({exc})",
                          hint="point it at /sys or a copy of its devices/system/{memory,node}") from None
    if not cpus:
        raise ConfigError(f"--from-host {root}: no NUMA node under {node_dir}")
    return HostShape(cpus, block_size, blocks * block_size)


def whatif(root: Path, size_text: str | None, console: Console | None = None) -> int:
    """Print each kernel's predicted time for a hot-add of ``size_text`` (default: the host's memory) on this host."""
    console = console or Console()
    try:
        size = parse_size(size_text) if size_text else None
    except ValueError as exc:
        raise ConfigError(f"--size: {exc}") from None
    shape = read_shape(root)
    size = size or shape.memory
    options: dict[str, Any] = {"nodes": shape.nodes, "cpus_per_node": max(1, *shape.cpus),
                               "block_size": shape.block_size, "boot_memory": shape.memory // shape.nodes,
                               "scenario": []}
    try:
        backend = SimulatedBackend(parse(options))
    except ValueError as exc:
        raise ConfigError(f"--from-host {root}: a host the simulator refuses: {exc}") from None
    predictions = backend.whatif(size, shape.cpus, RATIOS)
    render(shape, size, predictions, console)
    return 0


def render(shape: HostShape, size: int, predictions: Sequence[Any], console: Console) -> None:
    cpus = ", ".join(f"node{n}: {c}" for n, c in enumerate(shape.cpus))
    console.print(f"this host: {shape.nodes} nodes (CPUs {cpus}), {format_bytes(shape.block_size)} blocks, "
                  f"{format_bytes(shape.memory)} present; a hot-add of {format_bytes(size)} spread over its nodes")
    serial = next(p.seconds for p in predictions if p.kernel == "mainline" and p.ratio == 0)
    table = Table(title="predicted time to usable (computed, the simulator's costs: bench/README.md)")
    for column in ("kernel", "ratio (kernel %)", "workers a node", "time", "x serial", "peak offline"):
        table.add_column(column, justify="left" if column == "kernel" else "right")
    for p in predictions:
        table.add_row(LABELS[p.kernel, p.bound], f"{p.ratio:g} ({min(100, round(p.ratio * 100))} %)", str(p.workers),
                      f"{p.seconds:.3f} s", f"{serial / p.seconds:.1f}x" if p.seconds else "-",
                      format_bytes(p.peak_offline))
    console.print(table)
    for kernel in ("mainline", "per-block", "anolis"):
        mine = [p for p in predictions if p.kernel == kernel and not p.bound]
        best = max(mine, key=lambda p: (round(serial / p.seconds, 2), p.ratio))
        console.print(f"{LABELS[kernel, False]}, best at ratio {best.ratio:g}: {best.reason}")
