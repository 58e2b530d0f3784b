"""The deferral policy: when the final phase starts. Pure: no I/O, no clock of its own.

Waiting lets blocks be onlined together by parallel workers; it is bounded by
time (``settle``, ``max_defer``) and by what waiting costs the host: the bytes
left offline (``max_offline_bytes``) and the memmap they already hold against
MemAvailable (``max_memmap_share``). Where the backend cannot online in
parallel, waiting buys nothing, and with ``defer = "auto"`` it is skipped.

Whatever the deferral, a phase does not start while the backend has said that
more adds of the same hot-add follow at once (``BlockEvent.more``): they join
it, in one backend call rather than two. That promise holds for ``MORE_HOLD``
seconds at most, and never against memory pressure or a full queue
(``PRESSING``). It does hold past ``max_offline_bytes``: starting a phase with
the first 1 GiB of a 4 GiB DIMM would keep the other 3 GiB offline until that
phase ends, longer than the few milliseconds their events take to come.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from hotplugd.config import SchedulerConfig
from hotplugd.engine.queue import PendingQueue
from hotplugd.model import Topology, Trigger

#: The longest a backend's "more adds follow" (``BlockEvent.more``) holds a phase back.
MORE_HOLD = 0.05


#: Bounds that end a backend's promise of more adds at once.
PRESSING = frozenset({Trigger.QUEUE_FULL, Trigger.MEMMAP_SHARE})
#: Triggers of a domain that does not defer at all: they depend on no MemAvailable.
UNDEFERRED = frozenset({Trigger.RATIO_0, Trigger.SERIAL})


@dataclass(frozen=True, slots=True)
class Decision:
    """Start a phase now (``trigger``), or wait at most ``wait`` seconds for more events."""

    trigger: Trigger | None = None
    wait: float | None = None  # None with no trigger: nothing queued, wait for an event


def node_workers(ratio: float, cpus: int, concurrency: int) -> int:
    """Workers for one node: ``max(1, floor(ratio × cpus))``, capped by the backend's concurrency."""
    return max(1, min(math.floor(ratio * cpus), max(1, concurrency)))


def plan_workers(counts: dict[int, int], ratio: float, topology: Topology, budget: int) -> dict[int, int]:
    """Workers per node for a phase with ``counts[node]`` blocks, each node capped by ``budget``."""
    return {node: min(n, node_workers(ratio, topology.cpus(node), budget)) for node, n in counts.items()}


def total_workers(ratio: float, topology: Topology, concurrency: int) -> int:
    """How many onlines the final phase could run at once across the domain's nodes."""
    total = sum(node_workers(ratio, topology.cpus(n), concurrency) for n in topology.cpus_per_node)
    return min(total, max(1, concurrency))


def decide(cfg: SchedulerConfig, queue: PendingQueue, now: float, topology: Topology, concurrency: int) -> Decision:
    """The deferral rules, in order of precedence."""
    if not len(queue):
        return Decision()
    if topology.kernel_onlines:  # the kernel onlines them: hotplugd takes only what it left offline
        due = (queue.oldest if queue.oldest is not None else now) + cfg.kernel_grace
        return Decision(Trigger.KERNEL_LEFT) if now >= due else Decision(wait=due - now)
    bound = _bound(cfg, queue, topology)
    if bound not in PRESSING and queue.held_until is not None and now < queue.held_until:
        return Decision(wait=queue.held_until - now)  # the rest of the hot-add is on its way
    if cfg.parallel_hotplug_ratio == 0:
        return Decision(Trigger.RATIO_0)
    if cfg.defer == "auto" and total_workers(cfg.parallel_hotplug_ratio, topology, concurrency) <= 1:
        return Decision(Trigger.SERIAL)
    if bound is not None:
        return Decision(bound)
    oldest = queue.oldest if queue.oldest is not None else now
    last_add = queue.last_add if queue.last_add is not None else now
    if now - oldest >= cfg.max_defer:
        return Decision(Trigger.MAX_DEFER)
    if now - last_add >= cfg.settle:
        return Decision(Trigger.SETTLE)
    return Decision(wait=max(0.0, min(oldest + cfg.max_defer, last_add + cfg.settle) - now))


def _bound(cfg: SchedulerConfig, queue: PendingQueue, topology: Topology) -> Trigger | None:
    """The bound on what waits offline that the queue has reached, if any (pressing ones first)."""
    if len(queue) >= queue.limit:
        return Trigger.QUEUE_FULL
    if queue.memmap_bytes > cfg.max_memmap_share * topology.mem_available:
        return Trigger.MEMMAP_SHARE
    if queue.bytes >= cfg.max_offline_bytes:
        return Trigger.OFFLINE_BYTES
    return None
