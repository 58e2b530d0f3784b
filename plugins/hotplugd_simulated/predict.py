"""How long a hot-add takes on each simulated kernel, computed rather than slept (any size, instantly).

The same costs and rules as the host (:mod:`.kernels`), without the daemon: each node's
hot-add is a sequence of segments, some under the global ``device_hotplug_lock`` (one
server, first come first served), some outside it (Anolis's deferred phase), and the nodes'
sequences run side by side. Used by ``bench/seed_table.py``, the demo's comparison and
``hotplugd simulate --from-host``.
"""

from __future__ import annotations

import dataclasses
import heapq
from collections.abc import Sequence
from dataclasses import dataclass

from .kernels import Costs, kernel_percent, kernel_workers
from .scenario import VIRTIO_MEM_OFFLINE_LIMIT
from .settings import Settings, Step

#: Why each kernel is as fast as it is, one line each (the demo prints them).
REASONS = {
    "mainline": "every online takes device_hotplug_lock: one block at a time, whatever the ratio",
    "per-block": "page init split over {workers}, but every block pays set-up and join",
    "anolis": "PREPARE under the lock skips page init; the rest runs once, on {workers} a node",
}


@dataclass(frozen=True)
class Prediction:
    """One kernel and ratio on one hot-add."""

    kernel: str
    ratio: float  # hotplugd's workers per CPU; the kernel's percent is kernel_percent(ratio)
    bound: bool  # virtio-mem's 1 GiB offline threshold kept (the seed's kernel bypasses it)
    block_size: int
    total: int  # bytes hot-added
    seconds: float
    peak_offline: int  # bytes added but not yet usable, at most
    workers: int  # the kernel's workers on the busiest node
    #: The kernel's own workers on each node of the hot-add, in node order (0: a CPU-less node, whose
    #: range the driver walks itself); empty where the kernel onlines one block at a time.
    node_workers: tuple[int, ...] = ()

    @property
    def reason(self) -> str:
        if self.ratio == 0 or self.kernel == "mainline":
            return REASONS["mainline"] if self.kernel == "mainline" else "ratio 0: every block onlined the normal way"
        return REASONS[self.kernel].format(workers="1 worker" if self.workers == 1 else f"{self.workers} workers")


Segments = list[tuple[float, float]]  # (seconds under the lock, seconds after it, outside it)


def _segments(c: Costs, kernel: str, percent: int, cpus: int, kind: str, blocks: int, empty_zone: bool,
              bound: bool) -> tuple[Segments, int]:
    """One node's hot-add as lock segments, and its peak of blocks left offline."""
    workers = kernel_workers(cpus, percent)
    all_at_once = kind == "dimm"
    if kernel == "mainline" or percent == 0:
        return [(blocks * c.serial, 0.0)], blocks if all_at_once else 1
    if kernel == "per-block":
        return [(blocks * c.per_block(workers), 0.0)], blocks if all_at_once else 1
    segments: Segments = []
    if empty_zone and blocks:  # the first block of an empty zone is onlined the normal way
        segments.append((c.serial, 0.0))
        blocks -= 1
    per_phase = blocks if all_at_once or not bound else max(1, VIRTIO_MEM_OFFLINE_LIMIT // c.block_size)
    per_phase = max(1, per_phase)
    full, rest = divmod(blocks, per_phase)
    segments += [(per_phase * c.prepare, c.phase(per_phase, workers))] * full
    if rest:
        segments.append((rest * c.prepare, c.phase(rest, workers)))
    return segments, min(per_phase, blocks) if blocks else 0


def _play(nodes: Sequence[Segments]) -> float:
    """The time for every node's segments, the locked parts served one at a time (first ready, first
    served; ties to the lower node), in O(segments x log nodes)."""
    ready = [(0.0, i) for i, segs in enumerate(nodes) if segs]
    heapq.heapify(ready)
    position = [0] * len(nodes)
    lock_free = end = 0.0
    while ready:
        at, i = heapq.heappop(ready)
        locked, after = nodes[i][position[i]]
        lock_free = max(at, lock_free) + locked
        done = lock_free + after
        position[i] += 1
        if position[i] < len(nodes[i]):
            heapq.heappush(ready, (done, i))
        else:
            end = max(end, done)
    return end


def predict(settings: Settings, steps: Sequence[Step], kernel: str, ratio: float, *, bound: bool = False,
            block_size: int | None = None, cpus: Sequence[int] | None = None) -> Prediction:
    """``steps`` (dimm or virtio-mem, one node each) on ``kernel`` at hotplugd ratio ``ratio``.

    ``cpus``: CPUs of each node (default: ``settings.cpus_per_node`` on every node); a node
    with no boot memory has an empty zone; steps on different nodes run side by side.
    """
    size = block_size or settings.block_size
    c = dataclasses.replace(settings, kernel=kernel, block_size=size).costs()
    percent = kernel_percent(ratio)
    per_node = list(cpus) if cpus is not None else [settings.cpus_per_node] * settings.nodes
    plays: dict[int, Segments] = {}
    peak = 0
    for step in steps:
        if step.kind == "remove":
            continue
        empty = settings.boot_memory == 0 and step.node not in plays
        segs, offline = _segments(c, kernel, percent, per_node[step.node], step.kind, step.size // size, empty, bound)
        plays.setdefault(step.node, []).extend(segs)
        peak += offline * size
    workers = max((kernel_workers(per_node[n], percent) for n in plays), default=1)
    total = sum(s.size for s in steps if s.kind != "remove")
    parallel = kernel != "mainline" and percent > 0
    node_workers = tuple(kernel_workers(per_node[n], percent) if per_node[n] else 0 for n in sorted(plays))
    return Prediction(kernel, ratio, bound, size, total, _play(list(plays.values())), peak,
                      1 if kernel == "mainline" else workers, node_workers if parallel else ())


def spread(total: int, nodes: int, kind: str = "virtio-mem") -> list[Step]:
    """A hot-add of ``total`` bytes split evenly over ``nodes`` nodes (one device each)."""
    return [Step(kind, size=total // nodes, node=n) for n in range(nodes)]
