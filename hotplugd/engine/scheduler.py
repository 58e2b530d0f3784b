"""The scheduler: routes block events to their domain, and runs every domain's phases at once.

Each domain (the host, or a guest) has its own :class:`~hotplugd.engine.domain.DomainScheduler`:
its own queue, deferral bounds and worker pools, capped by the backend's
concurrency for that domain. Domains never wait for one another, except that at
most ``backend.parallel_domains`` of them run a phase at the same time. Full
scans (at start, after lost events, on request) are the scheduler's: one scan
of the backend, split by domain.
"""

from __future__ import annotations

import itertools
from collections import defaultdict
from collections.abc import Collection, Iterator
from contextlib import AbstractAsyncContextManager, nullcontext

import anyio
import structlog
from anyio.abc import TaskGroup

from hotplugd.engine.book import Stage
from hotplugd.engine.context import EngineContext
from hotplugd.engine.domain import DomainScheduler
from hotplugd.engine.phase import PhaseResult
from hotplugd.model import HOST_DOMAIN, Block, BlockEvent, Rescan, RescanReason, Topology
from hotplugd.observe.metrics import QueueSnapshot

log = structlog.get_logger(__name__)

class Changes:
    """A count of the engine's changes that tasks can wait on: the status line and the textfile follow it.

    ``bump()`` is the hot path (every event): it sets an event only when a task waits.
    """

    def __init__(self) -> None:
        self.version = 0
        self._event: anyio.Event | None = None

    def bump(self) -> None:
        self.version += 1
        if self._event is not None:
            self._event.set()
            self._event = None

    async def wait_past(self, version: int) -> None:
        """Return once something changed after ``version`` (at once if it did already)."""
        if self.version != version:
            return
        if self._event is None:
            self._event = anyio.Event()
        await self._event.wait()


class Scheduler:
    def __init__(self, ctx: EngineContext) -> None:
        self.ctx = ctx
        self.domains: dict[str, DomainScheduler] = {}
        self._phase_numbers = itertools.count(1)
        limit = ctx.backend.parallel_domains
        self._slots = anyio.Semaphore(limit) if limit > 0 else None  # a handed-over slot (see phase.py)
        self._tasks: TaskGroup | None = None
        self._wake = anyio.Event()
        self._rescan_reason: RescanReason | None = None
        #: Bumped whenever a domain published its queue's numbers (each event, each turn of its loop).
        self.changes = Changes()
        self._last_scan: Topology | None = None
        self.source_done = False  # the event stream ended (a finished simulation)
        self._until_idle = False
        self.stopping = False
        #: The blocks of the start-up scan that no kernel onlines (found offline with its onlining off), by
        #: domain: the daemon reports ready once they are through their phase.
        self.found_at_start: dict[str, set[int]] = {}

    def __repr__(self) -> str:
        state = "STOPPING" if self.stopping else "RUNNING"
        return f"<Scheduler [{state}] domains={len(self.domains)} {self.status()}>"

    def domain(self, name: str) -> DomainScheduler:
        """The scheduler of domain ``name``, made (and started, when running) on first use."""
        domain = self.domains.get(name)
        if domain is None:
            domain = self.domains[name] = DomainScheduler(self.ctx, name, phase_numbers=self._phase_numbers,
                                                          phase_slots=self._phase_slot)
            if self._last_scan is not None:  # made by an event: what the last scan said of its kernel
                domain.topology = self._last_scan.for_domain(name)
            domain.wants_rescan = self.request_rescan
            domain.phase_ended = self._poke
            domain.published = self.changes.bump
            if self.stopping:
                domain.stop()
            if self._tasks is not None:
                self._tasks.start_soon(domain.run)
        return domain

    @property
    def host(self) -> DomainScheduler:
        """The host's domain: every block of a one-domain backend (sysfs, simulated)."""
        return self.domain(HOST_DOMAIN)

    def _phase_slot(self) -> AbstractAsyncContextManager[object]:
        return self._slots if self._slots is not None else nullcontext()

    # -- intake ---------------------------------------------------------------

    def _poke(self) -> None:
        """A phase ended: only a run ``until_idle`` has anything to check then."""
        if self._until_idle:
            self._wake.set()

    def wake(self) -> None:
        self._wake.set()
        for domain in self.domains.values():
            domain.wake()

    def request_rescan(self, reason: RescanReason) -> None:
        """Scan the whole backend before the next decision (events were lost, or asked for)."""
        self._rescan_reason = self._rescan_reason or RescanReason(reason)
        self._wake.set()

    def handle(self, event: BlockEvent | Rescan) -> None:
        """Apply one event from the backend's stream."""
        if isinstance(event, Rescan):
            self.request_rescan(event.reason)
            return
        self.ctx.metrics.child(self.ctx.metrics.uevents, event.action.value).inc()
        self.domain(event.domain).handle(event)  # wakes the domain; the dispatcher has nothing to do per event

    async def rescan(self, reason: RescanReason, *, kernel_off: Collection[str] = ()) -> None:
        """Scan the backend; every domain queues its offline blocks, exactly like fresh adds.

        ``kernel_off``: the domains whose kernel onlines by the plan but whose auto-online read ``offline``
        until the plan set it (the start-up scan): their offline blocks were added before, no kernel onlines
        them, and they are taken at once (:attr:`found_at_start`).
        """
        reason = RescanReason(reason)
        scan = await self.ctx.backend.scan()
        self._last_scan = scan.topology
        by_domain: dict[str, list[Block]] = defaultdict(list)
        for block in scan.blocks:
            by_domain[block.domain].append(block)
        for name in by_domain.keys() | self.domains.keys():
            domain, off = self.domain(name), name in kernel_off
            domain.apply_scan(by_domain.get(name, ()), scan.topology.for_domain(name), reason, kernel_off=off)
            if off:
                self.found_at_start[name] = domain.queue.kernel_off_indices()
        for name in [n for n, d in self.domains.items() if n not in by_domain and d.idle and not d.book.failed_count]:
            self.domains.pop(name).stop()  # a guest that went away: its loop ends, its name is free again
        self.ctx.metrics.rescans.labels(reason.value).inc()
        self.publish()
        log.info("rescan", reason=reason, blocks=len(scan.blocks), domains=len(by_domain), queued=self.pending)

    @property
    def left_from_start(self) -> int:
        """How many of :attr:`found_at_start` are still queued or in a phase (0 once each is online or failed)."""
        waiting = (Stage.QUEUED, Stage.IN_PHASE, Stage.REMOVED)
        return sum(1 for name, indices in self.found_at_start.items() if (domain := self.domains.get(name))
                   for index in indices if domain.book.stage(index) in waiting)

    def reconfigured(self) -> None:
        """Apply a reloaded config's queue bound and plan to every domain (new domains read them when made)."""
        for domain in self.domains.values():
            domain.queue.limit = self.ctx.config.scheduler.max_pending_blocks
            domain.replanned()

    # -- the loop -------------------------------------------------------------

    def stop(self) -> None:
        """Take no new work; let the online calls in flight finish."""
        self.stopping = True
        for domain in self.domains.values():
            domain.stop()
        self._wake.set()

    @property
    def idle(self) -> bool:
        """Nothing queued, no rescan pending, no phase running, in any domain."""
        return self._rescan_reason is None and all(d.idle for d in self.domains.values())

    async def run(self, *, until_idle: bool = False) -> None:
        """Run every domain's phases, and the rescans, until stopped.

        With ``until_idle`` (or :meth:`finish_when_idle`): until the event source ended and every domain is done.
        """
        self._until_idle = self._until_idle or until_idle
        async with anyio.create_task_group() as tg:
            self._tasks = tg
            for domain in list(self.domains.values()):
                tg.start_soon(domain.run)
            try:
                while not self.stopping:
                    if self._rescan_reason is not None:
                        reason, self._rescan_reason = self._rescan_reason, None
                        await self.rescan(reason)
                        continue
                    if self._until_idle and self.source_done and self.idle:
                        break
                    await self._wake.wait()
                    self._wake = anyio.Event()
            finally:
                self._tasks = None
                self.stop()
                self.publish()

    def finish_when_idle(self) -> None:
        """End :meth:`run` once the event source ended and every domain is done (the daemon, once ready)."""
        self._until_idle = True
        self._wake.set()

    # -- what the metrics and the status line read ------------------------------

    def publish(self) -> None:
        """Every domain publishes its queue's numbers (after a rescan, at stop)."""
        for domain in self._each():
            domain.publish()

    def queue_snapshot(self) -> QueueSnapshot:
        """Every domain's queue as it last published it, summed: safe from any thread (the scrape's).

        Domains publish on change (each event, each turn of their loop), so nothing
        wakes an idle daemon to keep these numbers fresh. ``list()`` of the domains
        is one step under the GIL; each domain's snapshot is replaced whole.
        """
        snapshots = [d.snapshot for d in list(self.domains.values())]
        oldest = min((t for s in snapshots if (t := s.oldest) is not None), default=None)
        return QueueSnapshot(sum(s.pending for s in snapshots), sum(s.pending_bytes for s in snapshots), oldest,
                             sum(s.failed for s in snapshots), self.ctx.clock)

    def _each(self) -> Iterator[DomainScheduler]:
        return iter(list(self.domains.values()))

    @property
    def pending(self) -> int:
        return sum(len(d.queue) for d in self._each())

    @property
    def onlined(self) -> int:
        return sum(d.onlined for d in self._each())

    @property
    def verified(self) -> int:
        return sum(d.verified for d in self._each())

    @property
    def failed_count(self) -> int:
        """Blocks of every domain whose online failed."""
        return sum(d.book.failed_count for d in self._each())

    @property
    def last_phase(self) -> PhaseResult | None:
        phases = [d.last_phase for d in self._each() if d.last_phase is not None]
        return max(phases, key=lambda p: p.info.number, default=None)

    def status(self) -> str:
        """One line for systemd's STATUS= and the logs."""
        return f"pending {self.pending} blocks, onlined {self.onlined}, failed {self.failed_count}"
