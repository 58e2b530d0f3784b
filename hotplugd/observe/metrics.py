"""Prometheus metrics: one ``hotplugd_`` prefix, base units, ``_total`` on counters, no per-block labels.

A ``Metrics`` owns a fresh ``CollectorRegistry``; nothing is registered at
import time, so every daemon and every test gets its own. Label values known
in advance (actions, rescan reasons, triggers) are exported at 0 from the
start, so ``increase()`` and alerts see the first event.

Scrape-time collectors (the block census, dropped messages, the scheduler's
queue age) run in the metrics server's thread and only read.

Per-node series carry a ``domain`` label (``host`` on a one-domain backend, the
guest's name with ``qga``). It is bounded: the first ``max_domains`` domains seen
keep their name, later ones share ``domain="other"``, so a host with
thousands of guests cannot blow up the series count; queue, phase and
outcome metrics are aggregates over all domains.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any, Protocol

import structlog
from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    Info,
    ProcessCollector,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from hotplugd.model import Action, Block, Executor, PhaseInfo, RescanReason, Trigger

log = structlog.get_logger(__name__)

# Onlining one 128 MiB block takes ~5 ms on a real kernel; a TiB serially takes ~40 s.
CALL_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)
PHASE_BLOCK_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 4096, 16384, 65536)
#: 128 MiB (one x86 block) to 1 TiB, by powers of two.
PHASE_BYTE_BUCKETS = tuple(float(1 << shift) for shift in range(27, 41))

DROP_REASONS = ("malformed", "not_kernel")
RELOAD_RESULTS = ("applied", "refused")
#: Domains exported under their own name before they share :data:`OTHER_DOMAINS`.
DEFAULT_MAX_DOMAINS = 64
OTHER_DOMAINS = "other"


@dataclass(frozen=True, slots=True)
class QueueSnapshot:
    """The engine's queue in numbers, taken whole on the event loop; the scrape thread reads only these."""

    pending: int = 0
    pending_bytes: int = 0
    #: When the longest-waiting block was added (the engine's monotonic clock), None: none waits.
    oldest: float | None = None
    failed: int = 0
    clock: Callable[[], float] = time.monotonic

    @property
    def oldest_age(self) -> float:
        """Seconds the longest-waiting block has waited by now (0: none waits)."""
        return 0.0 if self.oldest is None else max(0.0, self.clock() - self.oldest)


class QueueView(Protocol):
    """What the metrics read of the engine: a read-only view, given to them by the daemon."""

    def queue_snapshot(self) -> QueueSnapshot: ...


class Metrics:
    """Every metric the daemon updates, on its own registry."""

    def __init__(self, registry: CollectorRegistry | None = None, *, max_domains: int = DEFAULT_MAX_DOMAINS) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        self._children: dict[tuple[int, tuple[object, ...]], Any] = {}
        self.max_domains = max_domains
        self._domain_labels: dict[str, str] = {}
        self._domain_labels_lock = threading.Lock()  # the loop and the scrape thread both name domains
        self._worker_nodes: dict[str, set[int]] = {}
        r = self.registry
        self.build_info = Info("hotplugd_build", "hotplugd's version and the backend it runs", registry=r)
        self._intake(r)
        self._queue(r)
        self._onlining(r)
        self._phases(r)
        self._daemon(r)
        self._plan(r)
        ProcessCollector(namespace="hotplugd", registry=r)
        self._initialise_labels()

    def _intake(self, r: CollectorRegistry) -> None:
        """Events in: uevents by action, rescans, refusals of a full queue, blocks someone else onlined."""
        self.uevents = Counter("hotplugd_uevents_received_total", "Memory block events received, by action",
                               ["action"], registry=r)
        self.rescans = Counter("hotplugd_rescans_total",
                               "Full host scans, by reason (start, overflow: the event source lost events, "
                               "request: SIGUSR1, queue_full)", ["reason"], registry=r)
        self.queue_full = Counter("hotplugd_queue_full_total",
                                  "Added blocks not queued because the pending queue was full (a rescan takes them)",
                                  registry=r)
        self.kernel_verified = Counter("hotplugd_blocks_verified_total",
                                       "Queued blocks another onliner (the kernel, a udev rule) onlined first",
                                       registry=r)

    def _queue(self, r: CollectorRegistry) -> None:
        """The pending queue, read from the engine's published numbers at scrape time (``watch_queue``)."""
        self.pending_blocks = Gauge("hotplugd_pending_blocks", "Added blocks waiting to be onlined", registry=r)
        self.pending_bytes = Gauge("hotplugd_pending_bytes", "Bytes of added blocks waiting to be onlined", registry=r)
        self.pending_age = Gauge("hotplugd_pending_oldest_age_seconds",
                                 "How long the longest-waiting added block has waited offline (0: none waits)",
                                 registry=r)
        self.failed_blocks = Gauge("hotplugd_failed_blocks",
                                   "Blocks whose online failed for good; they stay offline until the next rescan",
                                   registry=r)

    def _onlining(self, r: CollectorRegistry) -> None:
        """Each block's online: by where it went, its outcome, retries, zone mismatches and latencies."""
        self.onlined = Counter("hotplugd_blocks_onlined_total", "Blocks onlined by hotplugd, by domain, node and zone",
                               ["domain", "node", "zone"], registry=r)
        self.outcomes = Counter("hotplugd_online_outcomes_total",
                                "Final outcome of each block's online, by kind (onlined, already_online, transient, "
                                "permanent, gone, error) and errno (0: none)", ["outcome", "errno"], registry=r)
        self.retries = Counter("hotplugd_online_retries_total", "Online attempts repeated after a transient error",
                               registry=r)
        self.zone_mismatch = Counter("hotplugd_zone_mismatches_total",
                                     "Blocks that came online in another zone than requested", registry=r)
        self.add_to_online = Histogram("hotplugd_add_to_online_seconds",
                                       "Time from a block's add event to its online", buckets=LATENCY_BUCKETS,
                                       registry=r)
        self.online_call = Histogram("hotplugd_online_call_seconds", "Duration of one backend online call",
                                     buckets=CALL_BUCKETS, registry=r)

    def _phases(self, r: CollectorRegistry) -> None:
        """Final phases: counts by trigger, their size and duration, workers, the parallelism achieved and declared."""
        self.phases = Counter("hotplugd_phases_total", "Final phases, by the deferral trigger that started them",
                              ["trigger"], registry=r)
        self.phase_seconds = Histogram("hotplugd_phase_duration_seconds", "Duration of one final phase",
                                       buckets=LATENCY_BUCKETS, registry=r)
        self.phase_blocks = Histogram("hotplugd_phase_blocks", "Blocks handled by one final phase",
                                      buckets=PHASE_BLOCK_BUCKETS, registry=r)
        self.phase_bytes = Histogram("hotplugd_phase_size_bytes", "Bytes handled by one final phase",
                                     buckets=PHASE_BYTE_BUCKETS, registry=r)
        self.phase_workers = Gauge("hotplugd_phase_workers",
                                   "Workers per node in the domain's current (or last) phase", ["domain", "node"],
                                   registry=r)
        self.last_phase_blocks = Gauge("hotplugd_last_phase_blocks", "Blocks in the last final phase", registry=r)
        self.last_phase_bytes = Gauge("hotplugd_last_phase_bytes", "Bytes in the last final phase", registry=r)
        self.last_phase_seconds = Gauge("hotplugd_last_phase_duration_seconds", "Duration of the last final phase",
                                        registry=r)
        self.last_phase_time = Gauge("hotplugd_last_phase_timestamp_seconds",
                                     "When the last final phase ended (Unix time)", registry=r)
        self.effective_concurrency = Gauge(
            "hotplugd_phase_effective_concurrency",
            "Measured parallelism of the last phase: online-call seconds over phase seconds", registry=r)
        self.backend_concurrency = Gauge("hotplugd_backend_declared_concurrency",
                                         "Concurrent onlines the backend declares it can run", registry=r)

    def _plan(self, r: CollectorRegistry) -> None:
        """Who onlines each domain, what hotplugd read back of the kernel's own onlining, who else onlines."""
        self.executor = Gauge("hotplugd_onliner", "1 for who onlines each domain's blocks by the plan "
                              "(kernel: its own auto-online, set up by hotplugd; hotplugd), else 0",
                              ["domain", "onliner"], registry=r)
        self.kernel_onlined = Counter("hotplugd_kernel_onlined_blocks_total",
                                      "Blocks the kernel onlined, read back and verified by hotplugd, "
                                      "by domain, node and zone", ["domain", "node", "zone"], registry=r)
        self.kernel_phase = Histogram("hotplugd_kernel_final_phase_seconds",
                                      "How long the seed's kernel held a block half-online (its deferred final "
                                      "phase), from hotplugd's first sight of it to state online",
                                      buckets=LATENCY_BUCKETS, registry=r)
        self.kernel_stuck = Gauge("hotplugd_kernel_deferred_stuck_blocks",
                                  "Blocks the seed's kernel has held half-online past scheduler.kernel_phase_timeout: "
                                  "only the kernel can finish them", registry=r)
        self.conflicts = Gauge("hotplugd_conflicting_onliners",
                               "Other onliners found on the host at start (udev rules, a kernel knob that "
                               "contradicts the plan and cannot be set)", registry=r)

    def _daemon(self, r: CollectorRegistry) -> None:
        """The daemon itself: reloads, plugins left out."""
        self.reloads = Counter("hotplugd_config_reloads_total", "Configuration reloads (SIGHUP), by result",
                               ["result"], registry=r)
        self.plugin_failures = Gauge("hotplugd_plugin_failures",
                                     "Plugins left out because they failed to load or register (1 each), by plugin",
                                     ["plugin"], registry=r)

    def _initialise_labels(self) -> None:
        for action in Action:
            self.uevents.labels(action.value)
        for reason in RescanReason:
            self.rescans.labels(reason.value)
        for trigger in Trigger:
            self.phases.labels(trigger.value)
        for result in RELOAD_RESULTS:
            self.reloads.labels(result)

    # -- updates from the core ---------------------------------------------------

    def domain_label(self, domain: str) -> str:
        """The ``domain`` label of ``domain``: its name, or ``other`` once ``max_domains`` names are taken.

        Called from the event loop and from the scrape thread (the census), so
        the check and the insert are one step: never more than ``max_domains`` names.
        """
        label = self._domain_labels.get(domain)
        if label is not None:
            return label
        with self._domain_labels_lock:
            label = self._domain_labels.get(domain)
            if label is None:
                if len(self._domain_labels) >= self.max_domains:
                    return OTHER_DOMAINS
                label = self._domain_labels[domain] = domain
            return label

    def plan(self, domain: str, executor: str) -> None:
        """Say who onlines ``domain``'s blocks (1) and who does not (0)."""
        label = self.domain_label(domain)
        for each in Executor:
            self.executor.labels(label, each.value).set(1 if each.value == executor else 0)

    def phase_started(self, info: PhaseInfo) -> None:
        """Count the phase under its trigger; set the workers of its domain's nodes (0 for nodes it does not touch)."""
        self.phases.labels(info.trigger).inc()
        domain = self.domain_label(info.domain)
        seen = self._worker_nodes.setdefault(domain, set())
        for node in seen - set(info.workers):
            self.phase_workers.labels(domain, str(node)).set(0)
        seen |= set(info.workers)
        for node, n in info.workers.items():
            self.phase_workers.labels(domain, str(node)).set(n)

    def phase_finished(self, info: PhaseInfo, seconds: float, effective_concurrency: float) -> None:
        """Observe one finished phase's duration and size."""
        self.phase_seconds.observe(seconds)
        self.phase_blocks.observe(info.blocks)
        self.phase_bytes.observe(info.bytes)
        self.last_phase_blocks.set(info.blocks)
        self.last_phase_bytes.set(info.bytes)
        self.last_phase_seconds.set(seconds)
        self.last_phase_time.set(time.time())
        self.effective_concurrency.set(effective_concurrency)

    # -- scrape-time sources -------------------------------------------------------

    def watch_queue(self, view: QueueView) -> None:
        """Read the queue (size, bytes, age) and the failed blocks from ``view`` at scrape time."""
        self.pending_blocks.set_function(lambda: view.queue_snapshot().pending)
        self.pending_bytes.set_function(lambda: view.queue_snapshot().pending_bytes)
        self.pending_age.set_function(lambda: view.queue_snapshot().oldest_age)
        self.failed_blocks.set_function(lambda: view.queue_snapshot().failed)

    def child(self, metric: Any, *labels: object) -> Any:
        """``metric.labels(*map(str, labels))``, cached by the raw values: the per-block hot path."""
        key = (id(metric), labels)
        try:
            return self._children[key]
        except KeyError:
            child = self._children[key] = metric.labels(*map(str, labels))
            return child

    def add_census(self, census: Callable[[], Iterable[Block] | None]) -> None:
        """Export blocks and bytes per domain, node, zone and state, read from the host at scrape time."""
        self.registry.register(_CensusCollector(census, self.domain_label))

    def add_dropped(self, dropped: Callable[[], dict[str, int]]) -> None:
        """Export the event source's dropped-message counts (malformed, not_kernel, ...)."""
        self.registry.register(_DroppedCollector(dropped))



class _CensusCollector(Collector):
    """``hotplugd_memory_blocks`` and ``hotplugd_memory_bytes``: what the host says now, whoever onlined it;
    ``hotplugd_device_memory_blocks``/``_bytes`` the same for the blocks a device (dax) brought, by device."""

    def __init__(self, census: Callable[[], Iterable[Block] | None], domain_label: Callable[[str], str]) -> None:
        self._census = census
        self._domain_label = domain_label

    def describe(self) -> Iterator[Any]:
        return iter(self._families())

    @staticmethod
    def _families() -> tuple[GaugeMetricFamily, ...]:
        labels = ["domain", "node", "zone", "state"]
        per_device = ["device", "node", "zone", "state"]
        what = "by domain, node, zone (none: offline) and state, read at scrape time"
        return (GaugeMetricFamily("hotplugd_memory_blocks", f"Memory blocks present, {what}", labels=labels),
                GaugeMetricFamily("hotplugd_memory_bytes", f"Memory block bytes present, {what}", labels=labels),
                GaugeMetricFamily("hotplugd_device_memory_blocks",
                                  "Memory blocks a device brought (a dax device's, through kmem), by device, node, "
                                  "zone and state, read at scrape time", labels=per_device),
                GaugeMetricFamily("hotplugd_device_memory_bytes",
                                  "Memory block bytes a device brought, by device, node, zone and state, read at "
                                  "scrape time", labels=per_device),
                GaugeMetricFamily("hotplugd_memory_census_success",
                                  "1 when the scrape-time read of the host's blocks worked, else 0"))

    def collect(self) -> Iterator[Any]:
        blocks_family, bytes_family, device_blocks, device_bytes, success = self._families()
        try:
            blocks = self._census()
            counts: dict[tuple[str, str, str, str], list[int]] = {}
            devices: dict[tuple[str, str, str, str], list[int]] = {}
            for b in blocks or ():
                where = (str(b.node), b.zone or "none", str(b.state))
                for table, key in ((counts, (self._domain_label(b.domain), *where)),
                                   *(((devices, (b.source, *where)),) if b.source else ())):
                    entry = table.setdefault(key, [0, 0])
                    entry[0] += 1
                    entry[1] += b.size
        except Exception as exc:  # noqa: BLE001 - a failed read must not fail the whole scrape
            log.warning("census_failed", error=f"{type(exc).__name__}: {exc}")
            success.add_metric([], 0)
            yield success
            return
        for table, n_family, size_family in ((counts, blocks_family, bytes_family),
                                             (devices, device_blocks, device_bytes)):
            for key, (n, size) in sorted(table.items()):
                n_family.add_metric(list(key), n)
                size_family.add_metric(list(key), size)
        yield from (blocks_family, bytes_family, device_blocks, device_bytes)
        if blocks is not None:  # None: the backend cannot take a census
            success.add_metric([], 1)
            yield success


class _DroppedCollector(Collector):
    """``hotplugd_uevents_dropped_total``: the backend keeps the counts, we export them."""

    def __init__(self, dropped: Callable[[], dict[str, int]]) -> None:
        self._dropped = dropped

    def describe(self) -> Iterator[Any]:
        return iter([self._family()])

    @staticmethod
    def _family() -> CounterMetricFamily:
        return CounterMetricFamily("hotplugd_uevents_dropped",
                                   "Event-source messages dropped, by reason (malformed, not_kernel, ...)",
                                   labels=["reason"])

    def collect(self) -> Iterator[Any]:
        family = self._family()
        counts = dict.fromkeys(DROP_REASONS, 0) | dict(self._dropped())
        for reason, n in sorted(counts.items()):
            family.add_metric([reason], n)
        yield family
