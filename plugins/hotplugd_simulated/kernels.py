"""The three simulated kernels: what one online costs, and which rules serialise it.

Every figure here is written down with its source in ``bench/README.md`` ("The simulated
kernels"); the short version:

- **mainline** (Linux 6.1, the guest's kernel): every ``state`` write takes the global
  ``device_hotplug_lock`` by trylock; a loser sleeps ``msleep(5)`` and restarts the syscall.
  One block costs ``cost_fixed + pages x (init + free)``, fitted from the guest's timeline.
- **per-block** (the seed's first attempt): the same lock, but each block's page init and
  free are split over the node's workers; each block pays ``cost_setup`` to queue and join
  them, so small blocks lose and large blocks win.
- **anolis** (the seed's kernel, ``docs/facts/ANOLIS.md``): per block a PREPARE step
  under the lock without page init, then ``deferred_online_memory`` over chunks of the range,
  one worker per chunk; the first block of an empty zone is onlined the normal way.

Pure functions of the settings: the host (real time, small scenarios) and the predictions
(computed time, any size) both read their costs from here.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

PAGE = 4096
KERNELS = ("mainline", "per-block", "anolis")
#: CONFIG_HZ of Debian's 6.1 kernel (the guest's): one tick is 4 ms.
HZ = 250
#: msleep(5) = schedule_timeout(msecs_to_jiffies(5) + 1): 3 ticks from a random point of the
#: current tick, so 8 to 12 ms (measured in the guest: 8 to 12 ms); the model takes the mean.
TRYLOCK_RETRY = (math.ceil(0.005 * HZ) + 0.5) / HZ


def kernel_workers(cpus: int, percent: int) -> int:
    """Workers (chunks) of one node: ``max(1, cpus x min(ratio, 100) / 100)`` as Anolis counts them."""
    return max(1, cpus * min(percent, 100) // 100)


def kernel_percent(ratio: float) -> int:
    """hotplugd's ``parallel_hotplug_ratio`` (workers per CPU) as the kernel's percent of a node's CPUs."""
    return min(100, round(ratio * 100))


def chunks(blocks: int, workers: int) -> list[int]:
    """Blocks per chunk of ``deferred_online_memory``: ``workers`` chunks aligned to the block size,
    the last one taking the rest (fewer chunks when the range has fewer blocks than workers)."""
    if blocks <= 0:
        return []
    n = min(workers, blocks)
    per = blocks // n
    return [per] * (n - 1) + [blocks - per * (n - 1)]


@dataclass(frozen=True)
class Costs:
    """One kernel's costs in seconds, for one block size."""

    kernel: str
    block_size: int
    fixed: float  # per online: the lock, zone and node spans, notifiers
    per_page: float  # __init_single_page + __free_pages_core, one 4 KiB page
    setup: float  # queueing work items on a node's CPUs and waiting for them (per block or per phase)

    @property
    def pages(self) -> int:
        return self.block_size // PAGE

    @property
    def serial(self) -> float:
        """One block onlined the normal way (mainline, or any kernel with the ratio at 0)."""
        return self.fixed + self.pages * self.per_page

    def per_block(self, workers: int) -> float:
        """One block of the per-block kernel: its page work split over ``workers``, plus set-up and join."""
        if workers <= 1:
            return self.serial
        return self.fixed + self.setup + self.pages * self.per_page / workers

    @property
    def prepare(self) -> float:
        """Anolis's PREPARE step (under the lock): spans and counts, no page init."""
        return self.fixed / 2

    @property
    def deferred(self) -> float:
        """Anolis's deferred part of one block (no ``mem_hotplug_lock``): page init, free, notifiers."""
        return self.serial - self.prepare

    def phase(self, blocks: int, workers: int) -> float:
        """``deferred_online_memory`` over ``blocks``: its longest chunk, plus set-up when it queues work."""
        parts = chunks(blocks, workers)
        if not parts:
            return 0.0
        return (self.setup if len(parts) > 1 else 0.0) + max(parts) * self.deferred
