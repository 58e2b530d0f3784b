"""The final phase: online a batch of one domain's blocks through per-node worker pools.

Blocks are grouped by node and taken in ascending address order; each node
gets ``max(1, floor(ratio × CPUs))`` workers, capped by the backend's declared
concurrency, and a shared limiter keeps the total within it as well. Transient
errors are retried with backoff; every block ends with exactly one report.
"""

from __future__ import annotations

import errno as errno_mod
import itertools
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractAsyncContextManager, nullcontext
from dataclasses import dataclass, field

import anyio
import structlog

from .backend import Backend
from .config import Config
from .deferral import plan_workers
from .metrics import Metrics
from .model import HOST_DOMAIN, Block, BlockReport, OnlineResult, Outcome, PhaseInfo, Topology, ZoneRequest
from .pending import Waiting
from .plugins import PluginManager, call_isolated, first_result_isolated
from .zones import NodeLedger, narrow, policy_request, zone_matches

log = structlog.get_logger("hotplugd.phase")

#: A block of a run and the zone chosen for it (None: removed while queued, not called).
_Item = tuple[Waiting, ZoneRequest | None]
#: A run after its backend call: its items, the call's results, and when the call started.
_Run = tuple[list[_Item], list[OnlineResult], float]

#: The slot of a run whose calls overlap nothing: entering it does not yield (a limiter's acquire does).
_UNSHARED = nullcontext()

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


class FinalPhase:
    """Runs one domain's phases; holds what outlives one (the zone ledger, the call-time yardstick)."""

    def __init__(
        self,
        backend: Backend,
        pm: PluginManager,
        config: Config,
        metrics: Metrics,
        ledger: NodeLedger,
        clock: Callable[[], float] = time.monotonic,
        *,
        domain: str = HOST_DOMAIN,
        concurrency: int | None = None,
        numbers: Iterator[int] | None = None,
    ) -> None:
        self.backend = backend
        self.domain = domain
        #: The domain's real concurrency (default: the backend's).
        self.concurrency = max(1, backend.concurrency if concurrency is None else concurrency)
        self._numbers = numbers if numbers is not None else itertools.count(1)
        self.pm = pm
        self.config = config
        self.metrics = metrics
        self.ledger = ledger
        self.clock = clock
        self.stopping = False  # set on SIGTERM: finish the call in flight, take no more
        #: Blocks removed while queued or in a phase; the scheduler prunes it between phases.
        self.removed: set[int] = set()
        #: Uncontended duration of one online call (EWMA of each parallel phase's first,
        #: solo, call): the yardstick for the speed-up a phase really achieved.
        self.solo_seconds: float | None = None
        self._warned = False

    def layout(self, batch: Sequence[Waiting], topology: Topology, serial: bool) -> dict[int, deque[Waiting]]:
        """Group by node, ascending address (arrival order when serial)."""
        by_node: dict[int, deque[Waiting]] = {}
        ordered = batch if serial else sorted(batch, key=lambda w: w.block.start)
        for waiting in ordered:
            by_node.setdefault(waiting.block.node, deque()).append(waiting)
        return by_node

    async def run(self, batch: Sequence[Waiting], trigger: str, topology: Topology,
                  budget: int | None = None) -> PhaseResult:
        """Online ``batch``; at most ``budget`` onlines at once (default: the domain's concurrency)."""
        cfg = self.config.scheduler
        serial = cfg.parallel_hotplug_ratio == 0
        concurrency = self.concurrency
        budget = concurrency if budget is None else max(1, min(budget, concurrency))
        queues = self.layout(batch, topology, serial)
        if serial:
            workers = {node: 1 for node in queues}
            # one online at a time across nodes; a single node's only worker needs no limiter for that
            limiter: anyio.CapacityLimiter | None = anyio.CapacityLimiter(1) if len(queues) > 1 else None
        else:
            workers = plan_workers({n: len(q) for n, q in queues.items()}, cfg.parallel_hotplug_ratio, topology, budget)
            # per-node counts are capped already; across nodes the total may still exceed it
            limiter = anyio.CapacityLimiter(budget) if sum(workers.values()) > budget else None
        info = PhaseInfo(next(self._numbers), trigger, len(batch), sum(w.block.size for w in batch), workers,
                         self.domain)
        self.metrics.phase_started(info)
        call_isolated(self.pm.hook.hotplugd_phase_started, phase=info)
        log.debug("phase_started", phase=info.number, domain=self.domain, trigger=trigger, blocks=info.blocks,
                  workers=workers)

        reports: list[BlockReport] = []
        busy = [0.0]
        start = self.clock()

        def done(report: BlockReport) -> None:
            busy[0] += report.seconds
            reports.append(report)

        async def worker(queue: deque[Waiting], runs: int) -> None:
            """One block at a time; a node's only worker hands the backend runs of ``runs`` blocks instead."""
            if runs > 1:
                await self._pipeline(queue, runs, limiter, done)
                return
            while queue and not self.stopping:
                waiting = queue.popleft()
                if limiter is None:
                    done(await self._online_one(waiting))
                else:
                    async with limiter:
                        done(await self._online_one(waiting))

        parallel = sum(workers.values()) > 1
        if parallel and len(batch) >= 2 * sum(workers.values()) and not self.stopping:
            await self._calibrate(queues, reports, busy)
        runs = {node: max(1, self.backend.batch_size) if n == 1 else 1 for node, n in workers.items()}
        if len(queues) == 1 and sum(workers.values()) == 1:  # one worker: no task of its own
            node, queue = next(iter(queues.items()))
            await worker(queue, runs[node])
        else:
            async with anyio.create_task_group() as tg:
                for node, queue in queues.items():
                    for _ in range(workers[node]):
                        tg.start_soon(worker, queue, runs[node])

        seconds = self.clock() - start
        untouched = [w for q in queues.values() for w in q]
        effective = self._effective(len(reports), busy[0], seconds, parallel)
        total = sum(workers.values())
        # half of each extra worker's share, at least: less means the backend serialises
        measurable = (self.solo_seconds or 0) >= MEASURABLE_CALL  # below it, loop overhead dominates
        if (parallel and measurable and len(reports) >= 4 * total and effective < 1 + 0.5 * (total - 1)
                and not self._warned):
            self._warned = True
            log.warning("parallelism_not_achieved", domain=self.domain, declared=concurrency, workers=total,
                        measured=round(effective, 2),
                        hint="the backend serialises onlines: lower its declared concurrency to stop deferring")
        self.metrics.phase_finished(info, seconds, effective)
        call_isolated(self.pm.hook.hotplugd_phase_finished, phase=info, reports=reports, seconds=seconds)
        log.info("phase_finished", phase=info.number, domain=self.domain, trigger=trigger, blocks=len(reports),
                 seconds=round(seconds, 4), workers=workers, effective_concurrency=round(effective, 2),
                 failed=sum(1 for r in reports if not r.result.outcome.success))
        return PhaseResult(info, reports, seconds, untouched, effective)

    async def _calibrate(self, queues: dict[int, deque[Waiting]], reports: list[BlockReport], busy: list[float]) -> None:
        """Online one block alone before the workers start: its time is the uncontended call time."""
        node = max(queues, key=lambda n: len(queues[n]))
        report = await self._online_one(queues[node].popleft())
        reports.append(report)
        busy[0] += report.seconds
        if report.attempts == 1 and report.result.outcome is Outcome.ONLINED:
            previous = self.solo_seconds
            self.solo_seconds = report.seconds if previous is None else 0.8 * previous + 0.2 * report.seconds

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

    def choose_zone(self, block: Block) -> ZoneRequest:
        requested = policy_request(block, self.ledger, self.config.zones)
        chosen = first_result_isolated(self.pm.hook.hotplugd_choose_zone, expect=ZoneRequest, block=block,
                                       requested=requested, ledger=self.ledger, config=self.config)
        return chosen if chosen is not None else narrow(requested, block.valid_zones)

    async def _pipeline(self, queue: deque[Waiting], runs: int, shared: anyio.CapacityLimiter | None,
                        done: Callable[[BlockReport], None]) -> None:
        """Hand ``queue`` to the backend ``runs`` blocks per ``online_many`` call, in a pipeline.

        The next run's call starts while the last run is accounted (metrics, ledger, hooks,
        retries), so a backend writing from its own thread is not left idle by the event
        loop's per-block work. A slot (one backend call at a time for this worker, and the
        phase's limit across nodes: ``shared``) is held around every call, retries included.
        """
        if len(queue) <= runs and not self.stopping:  # a single run: nothing to overlap its accounting with
            slot: AbstractAsyncContextManager[object] = shared or _UNSHARED  # its calls never overlap
            items, results, t0 = await self._call_run(queue, runs, slot)
            for report in await self._account_run(items, results, t0, slot):
                done(report)
            return
        slot = shared or anyio.CapacityLimiter(1)
        send, receive = anyio.create_memory_object_stream[_Run](0)

        async def call() -> None:
            async with send:
                while queue and not self.stopping:
                    await send.send(await self._call_run(queue, runs, slot))

        async with anyio.create_task_group() as tg:
            tg.start_soon(call)
            async with receive:
                async for items, results, t0 in receive:
                    await anyio.lowlevel.checkpoint()  # let the caller start the next run's call first
                    for report in await self._account_run(items, results, t0, slot):
                        done(report)

    async def _call_run(self, queue: deque[Waiting], runs: int, slot: AbstractAsyncContextManager[object]) -> _Run:
        """The next ``runs`` blocks of ``queue``: their zones chosen, one backend call made (holding ``slot``)."""
        items = self._prepare([queue.popleft() for _ in range(min(runs, len(queue)))])
        async with slot:
            t0 = self.clock()
            results = await self._call_many(items)
        return items, results, t0

    def _prepare(self, run: list[Waiting]) -> list[_Item]:
        """Choose each block's zone; reserve it in the ledger so the next choice sees it (None: removed)."""
        items: list[_Item] = []
        for waiting in run:
            if waiting.block.index in self.removed:
                items.append((waiting, None))
                continue
            zone = self.choose_zone(waiting.block)
            self.ledger.record(waiting.block, zone.zone_name)
            items.append((waiting, zone))
        return items

    async def _call_many(self, items: list[_Item]) -> list[OnlineResult]:
        """One ``online_many`` call for the run's blocks still present; an exception fails them all."""
        calls = [(w.block, zone) for w, zone in items if zone is not None]
        if not calls:
            return []
        try:
            results = await self.backend.online_many(calls)
            if len(results) != len(calls):
                raise RuntimeError(f"online_many returned {len(results)} results for {len(calls)} blocks")
        except Exception as exc:  # noqa: BLE001 - isolate backend bugs to the run
            log.exception("backend_online_failed", blocks=[b.index for b, _ in calls])
            results = [OnlineResult(Outcome.ERROR, detail=f"{type(exc).__name__}: {exc}")] * len(calls)
        return list(results)

    async def _account_run(self, items: list[_Item], results: list[OnlineResult], t0: float,
                           slot: AbstractAsyncContextManager[object]) -> list[BlockReport]:
        """Report each block of a run; transient ones retry alone (holding ``slot``)."""
        reports: list[BlockReport] = []
        share = (self.clock() - t0) / max(1, len(results))
        answers = iter(results)
        for waiting, zone in items:
            if zone is None:  # removed while queued: reported gone, no call
                reports.append(await self._online_one(waiting))
                continue
            result = next(answers)
            self.ledger.unrecord(waiting.block, zone.zone_name)
            self.metrics.online_call.observe(share)
            if result.outcome is Outcome.TRANSIENT and self.config.scheduler.retries and not self.stopping:
                async with slot:
                    reports.append(await self._online_one(waiting, zone, tried=1, since=t0))
                continue
            now = self.clock()
            report = BlockReport(waiting.block, result, zone, 1, share, now - waiting.since)
            self._account(report)
            reports.append(report)
        return reports

    async def _online_one(self, waiting: Waiting, zone: ZoneRequest | None = None, tried: int = 0,
                          since: float | None = None) -> BlockReport:
        """Online one block, retrying transient errors with backoff (``tried``: attempts made already)."""
        block = waiting.block
        cfg = self.config.scheduler
        zone = zone or self.choose_zone(block)
        attempts = tried
        t0 = self.clock() if since is None else since
        while True:
            if attempts:  # a retry after a transient error
                self.metrics.retries.inc()
                await anyio.sleep(cfg.retry_backoff * (2 ** (attempts - 1)))
            attempts += 1
            if block.index in self.removed:
                result = OnlineResult(Outcome.GONE, detail="removed while queued")
                break
            call_start = self.clock()
            # Not cancelled on SIGTERM: ``stopping`` lets the call in flight finish.
            try:
                result = await self.backend.online(block, zone)
            except Exception as exc:  # noqa: BLE001 - isolate backend bugs to one block
                log.exception("backend_online_failed", block=block.index)
                result = OnlineResult(Outcome.ERROR, detail=f"{type(exc).__name__}: {exc}")
            self.metrics.online_call.observe(self.clock() - call_start)
            if result.outcome is not Outcome.TRANSIENT or attempts > cfg.retries or self.stopping:
                break
        now = self.clock()
        report = BlockReport(block, result, zone, attempts, now - t0, now - waiting.since)
        self._account(report)
        return report

    def _account(self, report: BlockReport) -> None:
        result, block = report.result, report.block
        m = self.metrics
        m.child(m.outcomes, result.outcome.value, result.errno or 0).inc()
        if result.outcome.success:
            self.ledger.record(block, result.zone)
            if result.outcome is Outcome.ONLINED:
                m.child(m.onlined, m.domain_label(block.domain), block.node, result.zone or "unknown").inc()
            m.add_to_online.observe(report.waited)
            if not zone_matches(report.requested, result.zone):
                m.zone_mismatch.inc()
                log.warning("zone_mismatch", block=block.index, requested=report.requested.value, zone=result.zone)
        elif result.outcome is not Outcome.GONE:
            log.error("online_failed", block=block.index, outcome=result.outcome.value,
                      errno=errno_mod.errorcode.get(result.errno or 0, result.errno), detail=result.detail,
                      attempts=report.attempts)
        call_isolated(self.pm.hook.hotplugd_block_outcome, report=report)
