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

Where the kernel onlines (its own auto-online, set up by hotplugd), hotplugd
takes only what the kernel has left: the kernel adds every block of a memory
device before it onlines the first, all under ``device_hotplug_lock``, so a
block still offline while the domain's events keep coming is not left offline.
The grace (``kernel_grace``) runs from the domain's last memory event (an
``add`` or ``online`` of any block), and a block announced by an ``add`` is
not left before the kernel's walk (its ``online`` events, ascending) has passed
it: under load a kernel may pause longer than the grace between two blocks of
one DIMM. ``kernel_grace_max`` from the oldest queued block's add bounds both,
so a kernel that never goes quiet, or stops mid-walk, is still noticed.
Blocks the start-up scan found offline while the kernel's auto-online still
read ``offline`` (before the plan turned it on: memory present at boot) were
added before it, and no kernel will online them: they are taken at once.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from hotplugd.config import SchedulerConfig
from hotplugd.engine.queue import PendingQueue, Waiting
from hotplugd.model import Topology, Trigger

#: The longest a backend's "more adds follow" (``BlockEvent.more``) holds a phase back.
MORE_HOLD = 0.05


#: Bounds that end a backend's promise of more adds at once.
PRESSING = frozenset({Trigger.QUEUE_FULL, Trigger.MEMMAP_SHARE})
#: Triggers of a domain that does not defer at all: they depend on no MemAvailable.
UNDEFERRED = frozenset({Trigger.RATIO_0, Trigger.SERIAL})
#: Triggers of hotplugd taking over blocks the kernel was to online.
TAKEOVER = frozenset({Trigger.KERNEL_LEFT, Trigger.KERNEL_BOUND, Trigger.KERNEL_OFF})


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
        return _kernel_left(cfg, queue, now)
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


def _quiet_since(queue: PendingQueue, now: float) -> tuple[float, float]:
    """(the oldest queued block's add, since when the domain has been quiet: its last memory event,
    or that add when it came later)."""
    oldest = queue.oldest if queue.oldest is not None else now
    return oldest, oldest if queue.last_event is None else max(oldest, queue.last_event)


def _kernel_left(cfg: SchedulerConfig, queue: PendingQueue, now: float) -> Decision:
    """Where the kernel onlines: take the queue once the domain was quiet for ``kernel_grace`` and the
    kernel's walk has passed every block it announced (it is done and left these), or once the oldest
    waited ``kernel_grace_max``. Blocks found at start with the kernel's onlining off: at once."""
    if queue.kernel_off:
        return Decision(Trigger.KERNEL_OFF)
    oldest, quiet = _quiet_since(queue, now)
    ahead = queue.ahead_of_kernel  # a slow kernel may pause longer than the grace mid-walk
    if now >= quiet + cfg.kernel_grace and not ahead:
        return Decision(Trigger.KERNEL_LEFT)
    if now >= oldest + cfg.kernel_grace_max:
        return Decision(Trigger.KERNEL_BOUND)
    due = oldest + cfg.kernel_grace_max
    return Decision(wait=(due if ahead else min(quiet + cfg.kernel_grace, due)) - now)


def takeover(trigger: Trigger, batch: Sequence[Waiting], last_event: float | None, now: float) -> dict[str, Any]:
    """Why hotplugd takes over ``batch``, blocks of a domain the kernel onlines: log fields."""
    oldest = min((w.since for w in batch), default=now)
    quiet = oldest if last_event is None else max(oldest, last_event)
    reason = {Trigger.KERNEL_LEFT: "no memory event for kernel_grace: the kernel left these offline",
              Trigger.KERNEL_OFF: "found offline at start while the kernel's auto-online was off: no kernel "
                                  "onlines them",
              }.get(trigger, "waited kernel_grace_max: the kernel's events kept coming, or its walk stopped short "
                             "of these")
    return {"reason": reason, "blocks": len(batch), "quiet_seconds": round(now - quiet, 3),
            "oldest_waited_seconds": round(now - oldest, 3)}


def _bound(cfg: SchedulerConfig, queue: PendingQueue, topology: Topology) -> Trigger | None:
    """The bound on what waits offline that the queue has reached, if any (pressing ones first)."""
    if len(queue) >= queue.limit:
        return Trigger.QUEUE_FULL
    if queue.memmap_bytes > cfg.max_memmap_share * topology.mem_available:
        return Trigger.MEMMAP_SHARE
    if queue.bytes >= cfg.max_offline_bytes:
        return Trigger.OFFLINE_BYTES
    return None
