"""One domain's scheduling: its queue of added blocks, its deferral decisions and its final phases.

A domain is one kernel that onlines blocks (the host, or a guest of the
``qga`` backend). ``handle()`` applies one event (synchronously, from the
intake task); ``apply_scan()`` applies the domain's part of a full scan;
``run()`` is the loop that asks the deferral policy when to start a phase.
The :class:`~hotplugd.scheduler.Scheduler` runs one of these per domain, all
at once.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from contextlib import AbstractAsyncContextManager, nullcontext

import anyio
import anyio.abc
import structlog

from .backend import Backend
from .config import Config
from .deferral import MORE_HOLD, UNDEFERRED, Decision, Trigger, decide, plan_workers
from .metrics import Metrics
from .model import Action, Block, BlockEvent, Outcome, State, Topology
from .onliner import Onliner
from .pending import PendingQueue, Waiting
from .phase import FinalPhase, PhaseResult
from .plugins import PluginManager
from .zones import NodeLedger

log = structlog.get_logger("hotplugd.scheduler")

#: How stale MemAvailable may be when a phase decision depends on it.
TOPOLOGY_MAX_AGE = 0.25


class DomainScheduler:
    """The queue, deferral and phases of one domain, capped by the backend's concurrency for it."""

    def __init__(
        self,
        name: str,
        backend: Backend,
        pm: PluginManager,
        config: Config,
        metrics: Metrics,
        clock: Callable[[], float] = time.monotonic,
        *,
        phase_numbers: Iterator[int] | None = None,
        phase_slots: Callable[[], AbstractAsyncContextManager[object]] = nullcontext,
    ) -> None:
        self.name = name
        self.backend = backend
        self.config = config
        self.metrics = metrics
        self.clock = clock
        self.concurrency = max(1, backend.domain_concurrency(name))
        self.queue = PendingQueue(config.scheduler.max_pending_blocks)
        self.onliner = Onliner(backend, pm, config, metrics, NodeLedger(), clock)
        self.phase = FinalPhase(self.onliner, pm, config, metrics, clock,
                                domain=name, concurrency=self.concurrency, numbers=phase_numbers)
        self._phase_slot = phase_slots  # across domains: at most the backend's ``parallel_domains`` phases
        self.topology: Topology | None = None
        self._topology_at = 0.0
        self._refreshing = False
        self._wake = anyio.Event()
        self.stopping = False
        #: Blocks that failed; left offline until the next rescan (or, unless permanent, ``_retry_at``).
        self.failed: dict[int, Outcome] = {}
        #: Failed blocks queued again at a time: transient errors that outlasted the retries, errors.
        self._retry_at: dict[int, tuple[float, Block]] = {}
        #: Blocks announced again (synthetic adds: a replay, a guest's agent back) while their phase
        #: ran: if that phase fails them, they are queued again at once, not after ``retry_failed_after``.
        self._added_in_phase: set[int] = set()
        #: Blocks known online (scan, our onlines, online events): a later add
        #: event for one of them is stale (or a synthetic replay) and changes nothing.
        self.known_online: set[int] = set()
        self.in_phase: set[int] = set()  # taken by a running phase
        self.busy_nodes: set[int] = set()  # nodes with a running phase
        self.busy_workers = 0  # backend slots held by running phases
        self.onlined = 0
        self.verified = 0
        self.last_phase: PhaseResult | None = None
        #: Called with a reason when a phase ran into a full queue: the scheduler rescans.
        self.wants_rescan: Callable[[str], None] = lambda reason: None
        #: Called when a phase ended: the scheduler may be waiting for every domain to be idle.
        self.phase_ended: Callable[[], None] = lambda: None

    def __repr__(self) -> str:
        state = "STOPPING" if self.stopping else "RUNNING"
        return (f"<DomainScheduler {self.name} [{state}] pending={len(self.queue)} onlined={self.onlined} "
                f"failed={len(self.failed)}>")

    # -- intake ---------------------------------------------------------------

    def wake(self) -> None:
        self._wake.set()

    def handle(self, event: BlockEvent) -> None:
        """Apply one event of this domain; wake its loop unless nothing it decides on changed."""
        if event.action is Action.ADD:
            self._handle_add(event)
        elif event.action is Action.REMOVE:
            self.queue.discard(event.index)
            self.onliner.removed.add(event.index)
            self.failed.pop(event.index, None)
            self._retry_at.pop(event.index, None)
            self.known_online.discard(event.index)
            self.in_phase.discard(event.index)
        elif event.action is Action.ONLINE:
            first = event.index not in self.known_online
            self.known_online.add(event.index)
            retrying = self._retry_at.pop(event.index, None) is not None
            if self.queue.discard(event.index) is not None or (self._kernel_onlines and first):
                self.verified += 1  # another onliner (or the kernel) got there first
                self.metrics.kernel_verified.inc()
            elif not retrying:
                return  # a block this domain onlined (or knew online): its queue and retries are as they were
        elif event.action is Action.OFFLINE:
            self.known_online.discard(event.index)
        self.wake()

    @property
    def _kernel_onlines(self) -> bool:
        return self.topology is not None and self.topology.kernel_onlines

    def _handle_add(self, event: BlockEvent) -> None:
        block = event.block
        self.queue.held_until = self.clock() + MORE_HOLD if event.more else None
        if event.synthetic and block is not None and block.index in self.in_phase:
            self._added_in_phase.add(block.index)  # announced again (a replay, an agent back): retry if it fails
            return
        if block is None or block.state is not State.OFFLINE or self._kernel_onlines or self._known(block.index):
            return  # gone already, online already (stale or a synthetic replay), or the kernel onlines it
        self.onliner.removed.discard(block.index)  # added again after a removal
        if not self.queue.add(block, self.clock()):
            self.metrics.queue_full.inc()  # the rescan after the next phase picks it up

    def _known(self, index: int) -> bool:
        return index in self.known_online or index in self.in_phase

    def apply_scan(self, blocks: Iterable[Block], topology: Topology, reason: str) -> None:
        """Queue every offline block of the domain's scan, exactly like fresh adds."""
        blocks = list(blocks)
        self.topology = topology
        self._topology_at = self.clock()
        self.onliner.ledger = NodeLedger.from_blocks(blocks)
        self.known_online = {b.index for b in blocks if b.state is State.ONLINE}
        if self.failed:
            # Lost events or a full queue are no reason to attempt (and report) a permanent failure
            # again; an operator's request is. Other failures get another attempt at any rescan.
            offline = {b.index for b in blocks if b.state is State.OFFLINE}
            self.failed = {i: o for i, o in self.failed.items()
                           if o is Outcome.PERMANENT and reason != "request" and i in offline}
        self._retry_at = {i: r for i, r in self._retry_at.items() if i in self.failed}
        self.queue.overflowed = False
        if not topology.kernel_onlines:
            now = self.clock()
            for block in sorted(blocks, key=lambda b: b.index):
                if (block.state is State.OFFLINE and not self._known(block.index) and block.index not in self.failed
                        and not self.queue.add(block, now)):
                    break  # full: the rescan after the next phase takes the rest
        self.wake()

    # -- the loop -------------------------------------------------------------

    def stop(self) -> None:
        """Take no new work; let the online call in flight finish."""
        self.stopping = True
        self.onliner.stopping = True
        self.wake()

    @property
    def idle(self) -> bool:
        """Nothing queued, no phase running."""
        return not len(self.queue) and not self.busy_nodes

    def _stale(self) -> bool:
        return self.topology is None or self.clock() - self._topology_at > TOPOLOGY_MAX_AGE

    async def _refresh_topology(self) -> Topology:
        self._refreshing = True
        try:
            self.topology = await self.backend.domain_topology(self.name)
            self._topology_at = self.clock()
        finally:
            self._refreshing = False
        return self.topology

    async def _decide(self, tasks: anyio.abc.TaskGroup) -> tuple[Topology, Decision]:
        """The deferral decision, on a topology fresh enough for it.

        A decision not to defer (ratio 0, a serial domain) depends on no
        MemAvailable: it is taken on the last topology, which is refreshed
        beside the phase rather than before it (a worker-thread read on the
        way to the first write of a hot-add). Any other is taken on a fresh one.
        """
        cfg, topology = self.config.scheduler, self.topology
        if topology is not None:
            decision = decide(cfg, self.queue, self.clock(), topology, self.concurrency)
            if not self._stale():
                return topology, decision
            if decision.trigger in UNDEFERRED:
                if not self._refreshing:
                    tasks.start_soon(self._refresh_topology)
                return topology, decision
        topology = await self._refresh_topology()
        return topology, decide(cfg, self.queue, self.clock(), topology, self.concurrency)

    def _overlapping(self) -> bool:
        """May phases of different nodes run at once? Only where onlines really run in parallel."""
        return self.config.scheduler.parallel_hotplug_ratio > 0 and self.concurrency > 1

    async def run(self) -> None:
        """Decide and run phases until stopped.

        Where the domain onlines in parallel, each node's phase runs on its own:
        a node busy with a phase does not hold back the others' queued blocks.
        """
        async with anyio.create_task_group() as phases:
            while not self.stopping:
                if self._retry_at:
                    self._requeue_due()
                if not len(self.queue):
                    await self._sleep(self._next_retry())
                    continue
                topology, decision = await self._decide(phases)
                if decision.trigger is None:
                    await self._sleep(min((w for w in (decision.wait, self._next_retry()) if w is not None),
                                          default=None))
                    continue
                if not self._overlapping():
                    batch = self.queue.take()
                    await self._run_phase(decision.trigger, batch, topology, self._reserve(batch, None))
                    continue
                budget = self.concurrency - self.busy_workers
                batch = self.queue.take(busy_nodes=self.busy_nodes) if budget > 0 else []
                if not batch:  # queued blocks wait for their node's phase, or for a free worker
                    await self._sleep(None)
                    continue
                counts = Counter(w.block.node for w in batch)
                reserved = min(budget, sum(plan_workers(counts, self.config.scheduler.parallel_hotplug_ratio,
                                                        topology, budget).values()))
                phases.start_soon(self._run_phase, decision.trigger, batch, topology, self._reserve(batch, reserved))

    def _next_retry(self) -> float | None:
        """Seconds until the next failed block is due to be queued again (None: none is)."""
        if not self._retry_at:
            return None
        return max(0.0, min(at for at, _ in self._retry_at.values()) - self.clock())

    def _requeue_due(self) -> None:
        now = self.clock()
        for index, (at, block) in list(self._retry_at.items()):
            if at <= now and (self._known(index) or self.queue.add(block, now)):
                del self._retry_at[index]  # queued again (or online meanwhile): no longer failed
                self.failed.pop(index, None)

    async def _sleep(self, wait: float | None) -> None:
        if wait is None:
            await self._wake.wait()
        else:
            with anyio.move_on_after(wait):
                await self._wake.wait()
        self._wake = anyio.Event()

    def _reserve(self, batch: list[Waiting], budget: int | None) -> int | None:
        """Mark the batch's blocks, nodes and backend slots as taken, before its phase task starts."""
        self.in_phase |= {w.block.index for w in batch}
        self.busy_nodes |= {w.block.node for w in batch}
        self.busy_workers += budget or 0
        return budget

    async def _run_phase(self, trigger: Trigger, batch: list[Waiting], topology: Topology,
                         budget: int | None) -> None:
        """One phase; with a ``budget`` (overlapping phases) it holds that many backend slots. Releases them.

        Without one it is run by the loop itself, which goes on deciding when it
        returns; an overlapping phase, a task of its own, wakes the loop instead.
        """
        try:
            async with self._phase_slot():
                result = await self.phase.run(batch, trigger.value, topology, budget)
        finally:
            self.in_phase -= {w.block.index for w in batch}
            self.busy_nodes -= {w.block.node for w in batch}
            self.busy_workers -= budget or 0
            if not self.busy_nodes:
                self.onliner.removed.clear()
            if budget is not None:
                self.wake()
            self.phase_ended()
        self.last_phase = result
        for waiting in result.untouched:  # stopping: they stay offline, and queued, for the status line
            self._added_in_phase.discard(waiting.block.index)
            self.queue.add(waiting.block, waiting.since)
        for report in result.reports:
            index, outcome = report.block.index, report.result.outcome
            added_again = index in self._added_in_phase
            self._added_in_phase.discard(index)
            if outcome.success:
                self.onlined += 1
                self.known_online.add(index)
                self.failed.pop(index, None)
                self._retry_at.pop(index, None)
            elif outcome is not Outcome.GONE:
                again = self.config.scheduler.retry_failed_after
                if outcome is not Outcome.PERMANENT and added_again and self.queue.add(report.block, self.clock()):
                    continue  # announced again while it failed: the cause may be gone
                self.failed[index] = outcome
                if outcome is not Outcome.PERMANENT and again > 0:
                    self._retry_at[index] = (self.clock() + again, report.block)
        if self.queue.overflowed:
            self.wants_rescan("queue_full")
