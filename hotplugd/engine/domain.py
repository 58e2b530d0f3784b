"""One domain's scheduling: its queue of added blocks, its deferral decisions and its final phases.

A domain is one kernel that onlines blocks (the host, or a guest of the
``qga`` backend). ``handle()`` applies one event (synchronously, from the
intake task); ``apply_scan()`` applies the domain's part of a full scan;
``run()`` is the loop that asks the deferral policy when to start a phase.
The :class:`~hotplugd.engine.scheduler.Scheduler` runs one of these per domain, all
at once.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from contextlib import AbstractAsyncContextManager, nullcontext

import anyio
import anyio.abc
import structlog

from hotplugd.engine.book import BlockBook
from hotplugd.engine.context import EngineContext
from hotplugd.engine.deferral import MORE_HOLD, TAKEOVER, UNDEFERRED, Decision, decide, plan_workers, takeover
from hotplugd.engine.hotadd import HotAddWatch
from hotplugd.engine.onliner import Onliner
from hotplugd.engine.phase import FinalPhase, PhaseResult
from hotplugd.engine.queue import PendingQueue, Waiting
from hotplugd.engine.verify import Verifier
from hotplugd.model import Action, Block, BlockEvent, NodeLedger, Outcome, RescanReason, State, Topology, Trigger
from hotplugd.observe.metrics import QueueSnapshot

log = structlog.get_logger(__name__)

#: How stale MemAvailable may be when a phase decision depends on it.
TOPOLOGY_MAX_AGE = 0.25


class DomainScheduler:
    """The queue, deferral and phases of one domain, capped by the backend's concurrency for it."""

    def __init__(
        self,
        ctx: EngineContext,
        name: str,
        *,
        phase_numbers: Iterator[int] | None = None,
        phase_slots: Callable[[], AbstractAsyncContextManager[object]] = nullcontext,
    ) -> None:
        self.ctx = ctx
        self.name = name
        self.concurrency = max(1, ctx.backend.domain_concurrency(name))
        self.book = BlockBook(ctx.config.scheduler.max_pending_blocks)
        self.onliner = Onliner(ctx, NodeLedger(), self.book.is_removed, lambda: self._kernel_onlines)
        self.verifier = Verifier(ctx, self.book, self.onliner)
        self.hotadd = HotAddWatch(name, ctx.clock)  # one line per hot-add once it has settled
        self.phase = FinalPhase(ctx, self.onliner, domain=name, concurrency=self.concurrency, numbers=phase_numbers)
        self._phase_slot = phase_slots  # across domains: at most the backend's ``parallel_domains`` phases
        self.topology: Topology | None = None
        self._topology_at = 0.0
        self._refreshing = False
        self._replanned = False  # a reload may have changed who onlines: the next decision reads the topology
        self._wake = anyio.Event()
        self.stopping = False
        self.busy_nodes: set[int] = set()  # nodes with a running phase
        self.busy_workers = 0  # backend slots held by running phases
        self.onlined = 0
        self.verified = 0
        self.last_phase: PhaseResult | None = None
        #: Called with a reason when a phase ran into a full queue: the scheduler rescans.
        self.wants_rescan: Callable[[RescanReason], None] = lambda reason: None
        #: Called when a phase (or a read-back) ended: the scheduler may be waiting for every domain to be idle.
        self.phase_ended: Callable[[], None] = lambda: None
        #: The queue's numbers as last published (pending, bytes, oldest, failed): one tuple, replaced whole.
        self._published: tuple[int, int, float | None, int] = (0, 0, None, 0)
        #: Called after each publish: the daemon's status line and textfile follow the changes.
        self.published: Callable[[], None] = lambda: None

    def __repr__(self) -> str:
        state = "STOPPING" if self.stopping else "RUNNING"
        return (f"<DomainScheduler {self.name} [{state}] pending={len(self.queue)} onlined={self.onlined} "
                f"failed={self.book.failed_count}>")

    @property
    def queue(self) -> PendingQueue:
        """The book's queue of added blocks, in arrival order."""
        return self.book.queue

    @property
    def failed(self) -> dict[int, Outcome]:
        """Blocks whose online failed, and how; they stay offline until a retry or the next rescan."""
        return self.book.failed

    @property
    def in_phase(self) -> set[int]:
        return self.book.in_phase

    # -- intake ---------------------------------------------------------------

    def wake(self) -> None:
        self._wake.set()

    def publish(self) -> None:
        """Take the queue's numbers on the event loop, for the scrape thread to read whole.

        Called on change (each event, each turn of the loop, after taking a batch):
        never on a timer, so an idle domain sleeps.
        """
        queue = self.queue
        self._published = (len(queue), queue.bytes, queue.oldest, self.book.failed_count)  # cheap: once per event
        self.published()

    @property
    def snapshot(self) -> QueueSnapshot:
        """The queue's numbers as last published: safe to read from any thread (the scrape's)."""
        return QueueSnapshot(*self._published, clock=self.ctx.clock)

    def handle(self, event: BlockEvent) -> None:
        """Apply one event of this domain; wake its loop unless nothing it decides on changed."""
        if event.action in (Action.ADD, Action.ONLINE) and not event.synthetic:
            self.queue.last_event = self.ctx.clock()  # the kernel is at work: its grace starts again
            if event.action is Action.ONLINE:
                self.queue.walk = event.index
        if event.action is Action.ADD:
            self._handle_add(event)
        elif event.action is Action.REMOVE:
            self.book.remove(event.index)
        elif event.action is Action.ONLINE:
            queued, retrying, first = self.book.came_online(event.index)
            if queued is not None or (self._kernel_onlines and first):
                self.verified += 1  # another onliner (or the kernel) got there first
                self.ctx.metrics.kernel_verified.inc()
                block = queued.block if queued is not None else event.block
                if self._kernel_onlines and block is not None:  # read back: where did it go, how long did it take
                    self.book.verify(block, queued.since if queued is not None else None, self.ctx.clock())
            elif not retrying:
                return  # a block this domain onlined (or knew online): its queue and retries are as they were
        elif event.action is Action.OFFLINE:
            self.book.went_offline(event.index)
        self.publish()  # a phase may hold the loop: the scrape sees the event now
        self.wake()

    @property
    def _kernel_onlines(self) -> bool:
        return self.topology is not None and self.topology.kernel_onlines

    def _handle_add(self, event: BlockEvent) -> None:
        block = event.block
        self.queue.held_until = self.ctx.clock() + MORE_HOLD if event.more else None
        if event.synthetic and block is not None and self.book.announced_again(block.index):
            return  # announced again (a replay, an agent back) while its phase runs: retried if it fails
        if block is None or self.book.busy(block.index):
            return  # gone already, or online, in a phase or being verified (a stale or synthetic replay)
        if block.state is not State.OFFLINE:
            # The kernel was faster than the event, or a dax device was onlined whole (its state
            # write, whatever the plan): read it back, counted as not hotplugd's.
            if (self._kernel_onlines or block.source) and not event.synthetic:
                self.book.verify(block, self.ctx.clock(), self.ctx.clock(),
                                 deferred=block.state is State.KERNEL_DEFERRED)
                self.hotadd.added(block)
            return
        if not self.book.queue_block(block, self.ctx.clock(), fresh=not event.synthetic):
            self.ctx.metrics.queue_full.inc()  # the rescan after the next phase picks it up
        elif not event.synthetic:
            self.hotadd.added(block)

    def apply_scan(self, blocks: Iterable[Block], topology: Topology, reason: RescanReason, *,
                   kernel_off: bool = False) -> None:
        """Queue every offline block of the domain's scan, exactly like fresh adds (``kernel_off``: the start-up
        scan, its kernel's auto-online off until the plan: where the kernel onlines, taken at once)."""
        blocks = list(blocks)
        self.topology = topology
        self._topology_at = self.ctx.clock()
        self.onliner.ledger = NodeLedger.from_blocks(blocks)
        if reason is RescanReason.OVERFLOW:  # events were lost in a storm: the kernel is at work
            self.queue.last_event = self.ctx.clock()
        self.book.apply_scan(blocks, reason, self.ctx.clock(), kernel_off=kernel_off)
        self.wake()

    # -- the loop -------------------------------------------------------------

    def stop(self) -> None:
        """Take no new work; let the online call in flight finish."""
        self.stopping = True
        self.onliner.stopping = True
        self.wake()

    @property
    def idle(self) -> bool:
        """Nothing queued, no phase running, nothing to read back."""
        return not len(self.queue) and not self.busy_nodes and not self.book.unsettled

    def _stale(self) -> bool:
        return self.topology is None or self.ctx.clock() - self._topology_at > TOPOLOGY_MAX_AGE

    def replanned(self) -> None:
        """The plan was applied again (a reload): the next decision reads the kernel's topology first."""
        self._replanned = True
        self.wake()

    async def _refresh_topology(self) -> Topology:
        self._refreshing = True
        self._replanned = False
        try:
            self.topology = await self.ctx.backend.domain_topology(self.name)
            self._topology_at = self.ctx.clock()
        finally:
            self._refreshing = False
        return self.topology

    async def _decide(self, tasks: anyio.abc.TaskGroup) -> tuple[Topology, Decision]:
        """The deferral decision, on a topology fresh enough for it.

        A decision not to defer (ratio 0, a serial domain) depends on no
        MemAvailable: it is taken on the last topology, which is refreshed
        beside the phase rather than before it (a worker-thread read on the
        way to the first write of a hot-add). So does waiting for the kernel
        where it onlines: that is taken on the last topology, not refreshed.
        Any other is taken on a fresh one.
        """
        cfg, topology = self.ctx.config.scheduler, self.topology
        if topology is not None:
            decision = decide(cfg, self.queue, self.ctx.clock(), topology, self.concurrency)
            kernel_wait = topology.kernel_onlines and decision.trigger is None
            if not self._replanned and (not self._stale() or kernel_wait):
                # Waiting for the kernel depends on no MemAvailable: not read again at each turn of its walk
                # (a worker-thread call, on the CPUs the walk needs); a takeover reads it fresh.
                return topology, decision
            if decision.trigger in UNDEFERRED:
                if not self._refreshing:
                    tasks.start_soon(self._refresh_topology)
                return topology, decision
        topology = await self._refresh_topology()
        return topology, decide(cfg, self.queue, self.ctx.clock(), topology, self.concurrency)

    def _overlapping(self) -> bool:
        """May phases of different nodes run at once? Only where onlines really run in parallel."""
        return self.ctx.config.scheduler.parallel_hotplug_ratio > 0 and self.concurrency > 1

    async def run(self) -> None:
        """Decide and run phases until stopped.

        Where the domain onlines in parallel, each node's phase runs on its own:
        a node busy with a phase does not hold back the others' queued blocks.
        """
        async with anyio.create_task_group() as phases:
            while not self.stopping:
                now = self.ctx.clock()
                self.book.requeue_due(now)
                self.publish()
                due = self.book.due_verifications(now)
                if due:
                    await self.verifier.verify(due)
                    self.phase_ended()  # the domain may be idle now: a run until idle checks
                    continue
                if not len(self.queue):
                    if self.idle:
                        self.hotadd.settled(self.book)
                    await self._sleep(self._next_wake(None))
                    continue
                topology, decision = await self._decide(phases)
                if decision.trigger is None:
                    await self._sleep(self._next_wake(decision.wait))
                    continue
                if not self._overlapping():
                    batch = self.book.take()
                    self.publish()
                    await self._run_phase(decision.trigger, batch, topology, self._reserve(batch, None))
                    continue
                budget = self.concurrency - self.busy_workers
                batch = self.book.take(busy_nodes=self.busy_nodes) if budget > 0 else []
                if not batch:  # queued blocks wait for their node's phase, or for a free worker
                    await self._sleep(None)
                    continue
                counts = Counter(w.block.node for w in batch)
                reserved = min(budget, sum(plan_workers(counts, self.ctx.config.scheduler.parallel_hotplug_ratio,
                                                        topology, budget).values()))
                phases.start_soon(self._run_phase, decision.trigger, batch, topology, self._reserve(batch, reserved))

    def _next_wake(self, wait: float | None) -> float | None:
        """The soonest of ``wait``, the next retry and the next read-back (None: only an event wakes)."""
        now = self.ctx.clock()
        waits = (wait, self.book.next_retry(now), self.book.next_poll(now))
        return min((w for w in waits if w is not None), default=None)

    async def _sleep(self, wait: float | None) -> None:
        if wait is None:
            await self._wake.wait()
        else:
            with anyio.move_on_after(wait):
                await self._wake.wait()
        self._wake = anyio.Event()

    def _reserve(self, batch: list[Waiting], budget: int | None) -> int | None:
        """Mark the batch's nodes and backend slots as taken, before its phase task starts."""
        self.busy_nodes |= {w.block.node for w in batch}
        self.busy_workers += budget or 0
        return budget

    async def _run_phase(self, trigger: Trigger, batch: list[Waiting], topology: Topology,
                         budget: int | None) -> None:
        """One phase; with a ``budget`` (overlapping phases) it holds that many backend slots. Releases them.

        Without one it is run by the loop itself, which goes on deciding when it
        returns; an overlapping phase, a task of its own, wakes the loop instead.
        """
        if trigger in TAKEOVER:
            why = takeover(trigger, batch, self.queue.last_event, self.ctx.clock())
            (log.warning if trigger is Trigger.KERNEL_BOUND else log.info)("kernel_takeover", domain=self.name, **why)
        try:
            async with self._phase_slot():
                result = await self.phase.run(batch, trigger.value, topology, budget)
        finally:
            self.busy_nodes -= {w.block.node for w in batch}
            self.busy_workers -= budget or 0
            if budget is not None:
                self.wake()
            self.phase_ended()
        self.last_phase = result
        for waiting in result.untouched:  # stopping: they stay offline, and queued, for the status line
            self.book.untouched(waiting)
        retry_after = self.ctx.config.scheduler.retry_failed_after
        since = {w.block.index: w.since for w in batch}
        for report in result.reports:
            if report.result.outcome is Outcome.ALREADY_ONLINE:  # found online: another onliner's, not hotplugd's
                self.verified += 1
                self.ctx.metrics.kernel_verified.inc()
                self.book.found_online(report.block, since.get(report.block.index), self.ctx.clock(),
                                       verify=self._kernel_onlines)  # the kernel's: read back and counted as such
            elif self.book.finished(report.block, report.result.outcome, self.ctx.clock(), retry_after):
                self.onlined += 1
                self.hotadd.onlined_by_hotplugd(report.block.index)
        if self.queue.overflowed:
            self.wants_rescan(RescanReason.QUEUE_FULL)
