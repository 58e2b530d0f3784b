"""Prometheus metrics: one ``hotplugd_`` prefix, base units, no per-block labels.

A ``Metrics`` owns a fresh ``CollectorRegistry``; nothing is registered at
import time, so every daemon and every test gets its own.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from .model import Block

# Onlining one 128 MiB block takes ~5 ms on a real kernel; phases take seconds.
CALL_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
PHASE_BLOCK_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 4096, 16384, 65536)


class Metrics:
    """Every metric the daemon updates, on its own registry."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        self.build_info = Info("hotplugd_build", "hotplugd version and backend", registry=r)
        self.uevents = Counter("hotplugd_uevents_received_total", "Block events received, by action",
                               ["action"], registry=r)
        self.rescans = Counter("hotplugd_rescans_total", "Full host scans, by reason (start, overflow, request, queue_full)",
                               ["reason"], registry=r)
        self.pending_blocks = Gauge("hotplugd_pending_blocks", "Added blocks waiting to be onlined", registry=r)
        self.pending_bytes = Gauge("hotplugd_pending_bytes", "Bytes of added blocks waiting to be onlined", registry=r)
        self.onlined = Counter("hotplugd_blocks_onlined_total", "Blocks onlined (or found online), by node and zone",
                               ["node", "zone"], registry=r)
        self.outcomes = Counter("hotplugd_online_outcomes_total",
                                "Final outcome of each block's online, by kind and errno (0: none)",
                                ["outcome", "errno"], registry=r)
        self.retries = Counter("hotplugd_online_retries_total", "Online attempts repeated after a transient error",
                               registry=r)
        self.zone_mismatch = Counter("hotplugd_zone_mismatches_total",
                                     "Blocks that came online in another zone than requested", registry=r)
        self.add_to_online = Histogram("hotplugd_add_to_online_seconds",
                                       "Time from a block's add event to its online", buckets=LATENCY_BUCKETS, registry=r)
        self.online_call = Histogram("hotplugd_online_call_seconds", "Duration of one backend online call",
                                     buckets=CALL_BUCKETS, registry=r)
        self.phase_seconds = Histogram("hotplugd_phase_duration_seconds", "Duration of one final phase",
                                       buckets=LATENCY_BUCKETS, registry=r)
        self.phase_blocks = Histogram("hotplugd_phase_blocks", "Blocks handled by one final phase",
                                      buckets=PHASE_BLOCK_BUCKETS, registry=r)
        self.phases = Counter("hotplugd_phases_total", "Final phases, by the deferral trigger that started them",
                              ["trigger"], registry=r)
        self.phase_workers = Gauge("hotplugd_phase_workers", "Workers per node in the current (or last) phase",
                                   ["node"], registry=r)
        self.effective_concurrency = Gauge(
            "hotplugd_phase_effective_concurrency",
            "Measured parallelism of the last phase: online-call seconds over phase seconds", registry=r)
        self.backend_concurrency = Gauge("hotplugd_backend_declared_concurrency",
                                         "Concurrent onlines the backend declares it can run", registry=r)
        self.kernel_verified = Counter("hotplugd_blocks_verified_total",
                                       "Blocks the kernel onlined itself, verified by hotplugd", registry=r)
        self.reloads = Counter("hotplugd_config_reloads_total", "Configuration reloads, by result",
                               ["result"], registry=r)
        self.conflicts = Gauge("hotplugd_conflicts", "Other onliners found on the host at start", registry=r)
        self.queue_full = Counter("hotplugd_queue_full_total", "Events refused because the pending queue was full",
                                  registry=r)

    def add_census(self, census: Callable[[], Iterable[Block] | None]) -> None:
        """Export blocks per node, zone and state, read from the host at scrape time."""
        self.registry.register(_CensusCollector(census))

    def add_dropped(self, dropped: Callable[[], dict[str, int]]) -> None:
        """Export the event source's dropped-message counts (malformed, not_kernel, ...)."""
        self.registry.register(_DroppedCollector(dropped))

    def value(self, name: str, labels: dict[str, str] | None = None) -> float:
        """A sample's value (0 when absent): for tests and the status command."""
        return self.registry.get_sample_value(name, labels or {}) or 0.0


class _CensusCollector(Collector):
    def __init__(self, census: Callable[[], Iterable[Block] | None]) -> None:
        self._census = census

    def collect(self) -> Iterator[Any]:
        family = GaugeMetricFamily("hotplugd_memory_blocks",
                                   "Memory blocks present, by node, zone and state, read at scrape time",
                                   labels=["node", "zone", "state"])
        blocks = self._census()
        if blocks is not None:
            counts: dict[tuple[str, str, str], int] = {}
            for b in blocks:
                key = (str(b.node), b.zone or "none", str(b.state))
                counts[key] = counts.get(key, 0) + 1
            for key, n in sorted(counts.items()):
                family.add_metric(list(key), n)
        yield family


class _DroppedCollector(Collector):
    def __init__(self, dropped: Callable[[], dict[str, int]]) -> None:
        self._dropped = dropped

    def collect(self) -> Iterator[Any]:
        family = CounterMetricFamily("hotplugd_uevents_dropped",
                                     "Event-source messages dropped, by reason (malformed, not_kernel, oversized)",
                                     labels=["reason"])
        for reason, n in sorted(self._dropped().items()):
            family.add_metric([reason], n)
        yield family
