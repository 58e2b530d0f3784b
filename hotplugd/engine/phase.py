"""The final phase: online a batch of one domain's blocks through per-node worker pools.

Blocks are grouped by node and taken in ascending address order; each node
gets ``max(1, floor(ratio × CPUs))`` workers, capped by the backend's declared
concurrency, and a shared limiter keeps the total within it as well. The
workers online through the domain's :class:`~hotplugd.engine.onliner.Onliner` (zones,
backend calls, retries, one report per block); the phase is counted, hooked
and logged as a whole, and measures the parallelism it really got.
"""

from __future__ import annotations

import itertools
from collections import deque
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import anyio
import structlog

from hotplugd.engine.context import EngineContext
from hotplugd.engine.deferral import plan_workers
from hotplugd.engine.onliner import Onliner
from hotplugd.engine.queue import Waiting
from hotplugd.model import HOST_DOMAIN, BlockReport, Outcome, PhaseInfo, Topology

log = structlog.get_logger(__name__)

#: Online calls shorter than this (a zero-cost simulation) say nothing about a backend's parallelism.
MEASURABLE_CALL = 0.0005


@dataclass
class PhaseResult:
    info: PhaseInfo
    reports: list[BlockReport]
    seconds: float
    #: Blocks not attempted because the daemon is stopping; they stay offline.
    untouched: list[Waiting] = field(default_factory=list)
    #: Sum of online-call time over phase time: the parallelism really achieved.
    effective_concurrency: float = 0.0


@dataclass
class _Layout:
    """A phase's workers: each node's queue (ascending address) and worker count, and the limiter across nodes."""

    queues: dict[int, deque[Waiting]]
    workers: dict[int, int]
    #: Keeps the onlines in flight within ``budget`` when the nodes' workers add up past it.
    limiter: anyio.Semaphore | None
    budget: int

    @property
    def total(self) -> int:
        """Workers that can online at once: those past the budget wait for the limiter."""
        return min(sum(self.workers.values()), self.budget)

    @property
    def parallel(self) -> bool:
        return self.total > 1

    def untouched(self) -> list[Waiting]:
        """The blocks no worker took (the daemon is stopping)."""
        return [w for q in self.queues.values() for w in q]


@dataclass
class _Tally:
    """The phase's reports as its workers finish them, and their online-call time summed."""

    reports: list[BlockReport] = field(default_factory=list)
    busy: float = 0.0

    def add(self, report: BlockReport) -> None:
        self.busy += report.seconds
        self.reports.append(report)


class FinalPhase:
    """Runs one domain's phases through its onliner; holds the call-time yardstick, which outlives one."""

    def __init__(
        self,
        ctx: EngineContext,
        onliner: Onliner,
        *,
        domain: str = HOST_DOMAIN,
        concurrency: int | None = None,
        numbers: Iterator[int] | None = None,
    ) -> None:
        self.ctx = ctx
        self.onliner = onliner
        self.domain = domain
        #: The domain's real concurrency (default: the backend's).
        self.concurrency = max(1, ctx.backend.concurrency if concurrency is None else concurrency)
        self._numbers = numbers if numbers is not None else itertools.count(1)
        #: Uncontended duration of one online call (EWMA of each parallel phase's first,
        #: solo, call): the yardstick for the speed-up a phase really achieved.
        self.solo_seconds: float | None = None
        self._warned = False

    @staticmethod
    def layout(batch: Sequence[Waiting], serial: bool) -> dict[int, deque[Waiting]]:
        """Group by node, ascending address (arrival order when serial)."""
        by_node: dict[int, deque[Waiting]] = {}
        ordered = batch if serial else sorted(batch, key=lambda w: w.block.start)
        for waiting in ordered:
            by_node.setdefault(waiting.block.node, deque()).append(waiting)
        return by_node

    async def run(self, batch: Sequence[Waiting], trigger: str, topology: Topology,
                  budget: int | None = None) -> PhaseResult:
        """Online ``batch``; at most ``budget`` onlines at once (default: the domain's concurrency)."""
        layout = self._lay_out(batch, topology, budget)
        info = PhaseInfo(next(self._numbers), trigger, len(batch), sum(w.block.size for w in batch), layout.workers,
                         self.domain)
        self._started(info)
        tally = _Tally()
        start = self.ctx.clock()
        if layout.parallel and len(batch) >= 2 * layout.total and not self.onliner.stopping:
            await self._calibrate(layout.queues, tally)
        await self._work(layout, tally)
        seconds = self.ctx.clock() - start
        effective = self._effective(len(tally.reports), tally.busy, seconds, layout.parallel)
        self._judge_parallelism(layout, len(tally.reports), effective)
        self._finished(info, tally.reports, seconds, effective)
        return PhaseResult(info, tally.reports, seconds, layout.untouched(), effective)

    # -- the workers, per node ----------------------------------------------------

    def _lay_out(self, batch: Sequence[Waiting], topology: Topology, budget: int | None) -> _Layout:
        """Queues per node, workers per node and the limiter that keeps their sum within the budget."""
        ratio = self.ctx.config.scheduler.parallel_hotplug_ratio
        serial = ratio == 0
        budget = self.concurrency if budget is None else max(1, min(budget, self.concurrency))
        queues = self.layout(batch, serial)
        if serial:
            workers = {node: 1 for node in queues}
            # one online at a time across nodes; a single node's only worker needs no limiter for that
            limiter = anyio.Semaphore(1) if len(queues) > 1 else None
        else:
            workers = plan_workers({n: len(q) for n, q in queues.items()}, ratio, topology, budget)
            # per-node counts are capped already; across nodes the total may still exceed it
            # A semaphore hands a released slot to the worker waiting for it; anyio 4.8's CapacityLimiter
            # (Debian 13's) let the releasing worker take it back as well: 4 onlines at once under a limit of 3.
            limiter = anyio.Semaphore(budget) if sum(workers.values()) > budget else None
        return _Layout(queues, workers, limiter, budget)

    async def _work(self, layout: _Layout, tally: _Tally) -> None:
        """Run every node's workers until their queues are empty (or the daemon stops)."""
        # a node's only worker hands the backend runs of its batch size; more workers take one block each
        runs = {node: max(1, self.ctx.backend.batch_size) if n == 1 else 1 for node, n in layout.workers.items()}
        if len(layout.queues) == 1 and sum(layout.workers.values()) == 1:  # one worker: no task of its own
            node, queue = next(iter(layout.queues.items()))
            await self._worker(queue, runs[node], layout.limiter, tally)
            return
        async with anyio.create_task_group() as tg:
            for node, queue in layout.queues.items():
                for _ in range(layout.workers[node]):
                    tg.start_soon(self._worker, queue, runs[node], layout.limiter, tally)

    async def _worker(self, queue: deque[Waiting], runs: int, limiter: anyio.Semaphore | None,
                      tally: _Tally) -> None:
        """One block at a time; with ``runs`` > 1 the backend gets runs of that many blocks instead."""
        if runs > 1:
            await self.onliner.pipeline(queue, runs, limiter, tally.add)
            return
        while queue and not self.onliner.stopping:
            waiting = queue.popleft()
            if limiter is None:
                tally.add(await self.onliner.online_one(waiting))
            else:
                async with limiter:
                    tally.add(await self.onliner.online_one(waiting))

    async def _calibrate(self, queues: dict[int, deque[Waiting]], tally: _Tally) -> None:
        """Online one block alone before the workers start: its time is the uncontended call time."""
        node = max(queues, key=lambda n: len(queues[n]))
        report = await self.onliner.online_one(queues[node].popleft())
        tally.add(report)
        if report.attempts == 1 and report.result.outcome is Outcome.ONLINED:
            previous = self.solo_seconds
            self.solo_seconds = report.seconds if previous is None else 0.8 * previous + 0.2 * report.seconds

    # -- what the phase achieved, and telling it ------------------------------------

    def _effective(self, blocks: int, busy: float, seconds: float, parallel: bool) -> float:
        """The parallelism really achieved: blocks x uncontended call time / phase time.

        Call time summed over wall time would count time spent waiting on a
        kernel lock as parallel work; the solo yardstick does not.
        """
        if seconds <= 0:
            return 0.0
        if parallel and self.solo_seconds:
            return blocks * self.solo_seconds / seconds
        return busy / seconds

    def _judge_parallelism(self, layout: _Layout, blocks: int, effective: float) -> None:
        """Warn (once) when a parallel phase got less than half of each extra worker's share: the backend serialises."""
        total = layout.total
        measurable = (self.solo_seconds or 0) >= MEASURABLE_CALL  # below it, loop overhead dominates
        if (layout.parallel and measurable and blocks >= 4 * total and effective < 1 + 0.5 * (total - 1)
                and not self._warned):
            self._warned = True
            log.warning("parallelism_not_achieved", domain=self.domain, declared=self.concurrency, workers=total,
                        measured=round(effective, 2),
                        hint="the backend serialises onlines: lower its declared concurrency to stop deferring")

    def _started(self, info: PhaseInfo) -> None:
        self.ctx.metrics.phase_started(info)
        self.ctx.hooks.phase_started(info)
        log.debug("phase_started", phase=info.number, domain=self.domain, trigger=info.trigger, blocks=info.blocks,
                  workers=info.workers)

    def _finished(self, info: PhaseInfo, reports: list[BlockReport], seconds: float, effective: float) -> None:
        self.ctx.metrics.phase_finished(info, seconds, effective)
        self.ctx.hooks.phase_finished(info, reports, seconds)
        log.info("phase_finished", phase=info.number, domain=self.domain, trigger=info.trigger, blocks=len(reports),
                 seconds=round(seconds, 4), workers=info.workers, effective_concurrency=round(effective, 2),
                 failed=sum(1 for r in reports if not r.result.outcome.success))
