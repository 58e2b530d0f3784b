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

from hotplugd import ConfigError, format_bytes, parse_cpulist, parse_size

from .backend import SimulatedBackend
from .predict import Prediction
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


def read_shape(root: Path) -> HostShape:
    """The host's shape under ``root`` (``/sys`` or a copy of it); ConfigError naming what is missing."""
    memory_dir = root / "devices/system/memory"
    try:
        block_size = int((memory_dir / "block_size_bytes").read_text().strip(), 16)
        blocks = sum(1 for name in os.listdir(memory_dir) if name.startswith("memory") and name[6:].isdigit())
        node_dir = root / "devices/system/node"
        nodes = sorted(int(n[4:]) for n in os.listdir(node_dir) if n.startswith("node") and n[4:].isdigit())
        cpus = tuple(parse_cpulist((node_dir / f"node{n}" / "cpulist").read_text()) for n in nodes)
    except (OSError, ValueError) as exc:
        raise ConfigError(f"--from-host {root}: not a sysfs tree with memory blocks and NUMA nodes ({exc})",
                          hint="point it at /sys or a copy of its devices/system/{memory,node}") from None
    if not cpus:
        raise ConfigError(f"--from-host {root}: no NUMA node under {node_dir}")
    return HostShape(cpus, block_size, blocks * block_size)


#: The largest hot-add the what-if computes: 2^20 blocks (128 TiB of 128 MiB blocks), checked before any work.
MAX_BLOCKS = 1 << 20


def hot_add_size(size_text: str | None, shape: HostShape) -> int:
    """The hot-add's size: ``--size`` (default: the host's present memory), refused (exit 78, naming
    ``--size``) below one block per node or above :data:`MAX_BLOCKS` blocks."""
    if size_text is None:
        size = shape.memory
        what = f"the host's present memory ({format_bytes(size)})"
    else:
        try:
            size = parse_size(size_text)
        except ValueError as exc:
            raise ConfigError(f"--size: {exc}") from None
        what = size_text
    least = shape.block_size * shape.nodes
    if size < least:
        raise ConfigError(f"{'--size: ' if size_text is not None else ''}{what} is less than one "
                          f"{format_bytes(shape.block_size)} block on each of the host's {plural(shape.nodes, 'node')}",
                          hint=f"give --size at least {format_bytes(least)}")
    if size // shape.block_size > MAX_BLOCKS:
        raise ConfigError(f"--size: {what} is {size // shape.block_size} blocks of {format_bytes(shape.block_size)}; "
                          f"the what-if computes at most {MAX_BLOCKS} ({format_bytes(MAX_BLOCKS * shape.block_size)})")
    return size


def whatif(root: Path, size_text: str | None, console: Console | None = None) -> int:
    """Print each kernel's predicted time for a hot-add of ``size_text`` (default: the host's memory) on this host."""
    console = console or Console()
    if size_text is not None:  # a spelling error is the flag's, before the host is read
        try:
            parse_size(size_text)
        except ValueError as exc:
            raise ConfigError(f"--size: {exc}") from None
    shape = read_shape(root)
    size = hot_add_size(size_text, shape)
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


def plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def _workers(p: Prediction) -> str:
    if not p.node_workers:
        return "-"  # one block at a time: no worker of the kernel's own
    return ", ".join(str(w) for w in p.node_workers)


def why(p: Prediction, serial: float, shape: HostShape) -> str:
    """One row's reason, in the operator's terms."""
    if p.kernel == "mainline" or p.ratio == 0:
        return p.reason
    text = p.reason
    if p.bound:
        text += "; virtio-mem's 1 GiB threshold kept: one phase per GiB"
    if p.seconds >= serial:
        text += "; no faster than serial here"
    idle = [str(n) for n, c in enumerate(shape.cpus) if c == 0]
    if idle:
        text += f"; node {', '.join(idle)} has no CPU: the driver walks its range alone, one block at a time"
    return text


def best(predictions: Sequence[Prediction], serial: float) -> Prediction:
    """The ratio to boot with: the fastest, ties (the same speed-up to 0.01x) to the lowest ratio; 0 where
    nothing gains."""
    return min(predictions, key=lambda p: (-round(serial / p.seconds, 2) if p.seconds else 0.0, p.ratio))


def render(shape: HostShape, size: int, predictions: Sequence[Prediction], console: Console) -> None:
    cpus = ", ".join(f"node{n}: {c}" for n, c in enumerate(shape.cpus))
    console.print(f"this host: {plural(shape.nodes, 'node')} (CPUs {cpus}), {format_bytes(shape.block_size)} blocks, "
                  f"{format_bytes(shape.memory)} present; a hot-add of {format_bytes(size)} spread over its "
                  f"{plural(shape.nodes, 'node')}")
    serial = next(p.seconds for p in predictions if p.kernel == "mainline" and p.ratio == 0)
    table = Table(title="predicted time to usable (computed, the simulator's costs: bench/README.md)")
    for column in ("kernel", "ratio (kernel %)", "kernel workers per node", "time", "x serial", "peak offline",
                   "why"):
        table.add_column(column, justify="left" if column in ("kernel", "why") else "right", no_wrap=column != "why")
    for p in predictions:
        table.add_row(LABELS[p.kernel, p.bound], f"{p.ratio:g} ({min(100, round(p.ratio * 100))} %)", _workers(p),
                      f"{p.seconds:.3f} s", f"{serial / p.seconds:.1f}x" if p.seconds else "-",
                      format_bytes(p.peak_offline), why(p, serial, shape))
    console.print(table)
    for kernel in ("mainline", "per-block", "anolis"):
        pick = best([p for p in predictions if p.kernel == kernel and not p.bound], serial)
        if pick.ratio == 0:
            advice = "boot with ratio 0: deferring gains nothing here"
        else:
            advice = f"boot with ratio {pick.ratio:g} ({serial / pick.seconds:.1f}x serial): {pick.reason}"
        console.print(f"{LABELS[kernel, False]}: {advice}")
