"""The deferral rules, each on its own, with explicit clocks (no wall-clock)."""

from __future__ import annotations

import pytest

from hotplugd.config import SchedulerConfig
from hotplugd.engine.deferral import MORE_HOLD, decide, node_workers, total_workers
from hotplugd.engine.queue import PendingQueue
from hotplugd.model import Block, Topology, Trigger

MiB = 1 << 20
GiB = 1 << 30


def topo(cpus: dict[int, int] | None = None, mem_available: int = 64 * GiB) -> Topology:
    return Topology(cpus or {0: 8}, mem_available, 128 * MiB)


def queue_with(times: list[float], size: int = 128 * MiB) -> PendingQueue:
    q = PendingQueue(1000)
    for i, t in enumerate(times):
        q.add(Block(i, size), t)
    return q


def cfg(**kw) -> SchedulerConfig:
    base = dict(parallel_hotplug_ratio=1.0, settle=0.2, max_defer=2.0, max_offline_bytes=GiB, max_memmap_share=0.25)
    base.update(kw)
    return SchedulerConfig(**base)


def test_empty_queue_waits_for_an_event():
    d = decide(cfg(), PendingQueue(10), 5.0, topo(), 8)
    assert d.trigger is None and d.wait is None


def test_ratio_zero_never_defers():
    d = decide(cfg(parallel_hotplug_ratio=0), queue_with([10.0]), 10.0, topo(), 8)
    assert d.trigger is Trigger.RATIO_0


def test_serial_backend_does_not_defer_by_default():
    assert decide(cfg(), queue_with([10.0]), 10.0, topo(), 1).trigger is Trigger.SERIAL


def test_serial_backend_defers_when_told_always():
    d = decide(cfg(defer="always"), queue_with([10.0]), 10.0, topo(), 1)
    assert d.trigger is None and d.wait == pytest.approx(0.2)


def test_settle_waits_then_fires():
    q = queue_with([10.0, 10.1])
    waiting = decide(cfg(), q, 10.15, topo(), 8)
    assert waiting.trigger is None and waiting.wait == pytest.approx(0.15)
    assert decide(cfg(), q, 10.3, topo(), 8).trigger is Trigger.SETTLE


def test_max_defer_bounds_a_steady_trickle():
    # an add every 0.1 s never lets the queue settle; the oldest block's wait is bounded
    q = queue_with([10.0 + 0.1 * i for i in range(5)])
    q.add(Block(99, 128 * MiB), 11.95)
    d = decide(cfg(max_offline_bytes=100 * GiB), q, 11.99, topo(), 8)
    assert d.trigger is None and d.wait == pytest.approx(0.01)
    assert decide(cfg(max_offline_bytes=100 * GiB), q, 12.0, topo(), 8).trigger is Trigger.MAX_DEFER


def test_offline_bytes_fire_at_once():
    q = queue_with([10.0] * 8)  # 8 x 128 MiB = 1 GiB
    assert decide(cfg(), q, 10.0, topo(), 8).trigger is Trigger.OFFLINE_BYTES
    q7 = queue_with([10.0] * 7)
    assert decide(cfg(), q7, 10.0, topo(), 8).trigger is None


def test_memmap_share_fires_under_memory_pressure():
    q = queue_with([10.0] * 2)  # 256 MiB offline -> 4 MiB memmap
    assert decide(cfg(), q, 10.0, topo(mem_available=64 * GiB), 8).trigger is None
    d = decide(cfg(), q, 10.0, topo(mem_available=15 * MiB), 8)  # 4 MiB > 25 % of 15 MiB
    assert d.trigger is Trigger.MEMMAP_SHARE


def test_offline_bytes_take_precedence_over_timers():
    q = queue_with([0.0] * 8)
    assert decide(cfg(), q, 100.0, topo(), 8).trigger is Trigger.OFFLINE_BYTES


@pytest.mark.parametrize(
    ("ratio", "cpus", "concurrency", "expected"),
    [(1.0, 8, 64, 8), (0.5, 8, 64, 4), (0.1, 8, 64, 1), (2.0, 4, 64, 8), (1.0, 8, 3, 3), (1.0, 8, 1, 1),
     (0.0, 8, 8, 1)],
)
def test_workers_per_node(ratio, cpus, concurrency, expected):
    assert node_workers(ratio, cpus, concurrency) == expected


def test_total_workers_capped_by_concurrency_across_nodes():
    t = topo({0: 4, 1: 4})
    assert total_workers(1.0, t, 64) == 8
    assert total_workers(1.0, t, 6) == 6
    assert total_workers(1.0, t, 1) == 1


def test_more_adds_promised_hold_the_phase_back_briefly():
    q = queue_with([10.0])
    q.held_until = 10.0 + MORE_HOLD
    held = decide(cfg(), q, 10.01, topo(), 1)
    assert held.trigger is None and held.wait == pytest.approx(MORE_HOLD - 0.01)
    assert decide(cfg(), q, 10.0 + MORE_HOLD, topo(), 1).trigger is Trigger.SERIAL  # the promise ran out
    q.held_until = None  # the last add came
    assert decide(cfg(), q, 10.01, topo(), 1).trigger is Trigger.SERIAL


def test_more_adds_promised_hold_past_the_offline_bytes_but_not_against_pressure():
    q = queue_with([10.0] * 8)  # 1 GiB offline: max_offline_bytes reached
    q.held_until = 10.0 + MORE_HOLD
    assert decide(cfg(), q, 10.0, topo(), 8).trigger is None  # the rest of the DIMM is milliseconds away
    assert decide(cfg(), q, 10.0 + MORE_HOLD, topo(), 8).trigger is Trigger.OFFLINE_BYTES
    d = decide(cfg(), q, 10.0, topo(mem_available=60 * MiB), 8)  # 16 MiB memmap > 25 % of 60 MiB
    assert d.trigger is Trigger.MEMMAP_SHARE
    full = queue_with([10.0] * 3)
    full.limit, full.held_until = 3, 10.0 + MORE_HOLD
    assert decide(cfg(parallel_hotplug_ratio=0), full, 10.0, topo(), 8).trigger is Trigger.RATIO_0
