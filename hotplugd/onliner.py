"""One domain's onlining, block by block or a run at a time: what every phase's workers call.

For each block: the zone (policy, then the ``hotplugd_choose_zone`` hooks,
reserved in the node ledger so the next choice sees it), the backend call
(``online`` for one block, ``online_many`` for a run, pipelined so the next
run's call overlaps the last run's accounting), retries of transient errors
with backoff, and exactly one report, accounted in the ledger, the metrics,
the ``hotplugd_block_outcome`` hook and the log.
"""

from __future__ import annotations

import errno as errno_mod
import time
from collections import deque
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager, nullcontext
from dataclasses import dataclass, field

import anyio
import structlog

from .backend import Backend
from .config import Config
from .metrics import Metrics
from .model import Block, BlockReport, OnlineResult, Outcome, ZoneRequest
from .pending import Waiting
from .plugins import PluginManager, call_isolated, first_result_isolated
from .zones import NodeLedger, narrow, policy_request, zone_matches

log = structlog.get_logger("hotplugd.phase")  # the blocks' events are their phase's, as before the split

#: A block of a run and the zone chosen for it (None: removed while queued, not called).
_Item = tuple[Waiting, ZoneRequest | None]
#: A run after its backend call: its items, the call's results, and when the call started.
_Run = tuple[list[_Item], list[OnlineResult], float]

#: The slot of a run whose calls overlap nothing: entering it does not yield (a limiter's acquire does).
_UNSHARED = nullcontext()


@dataclass(eq=False, repr=False)
class Onliner:
    """Onlines one domain's blocks for its phases; holds the node ledger and what a phase must skip."""

    backend: Backend
    pm: PluginManager
    config: Config
    metrics: Metrics
    ledger: NodeLedger
    clock: Callable[[], float] = time.monotonic
    #: Set on SIGTERM: finish the call in flight, take no more.
    stopping: bool = field(default=False, init=False)
    #: Blocks removed while queued or in a phase; the scheduler prunes it between phases.
    removed: set[int] = field(default_factory=set, init=False)

    def __repr__(self) -> str:
        return f"<Onliner {type(self.backend).__name__} removed={len(self.removed)} stopping={self.stopping}>"

    def choose_zone(self, block: Block) -> ZoneRequest:
        requested = policy_request(block, self.ledger, self.config.zones)
        chosen = first_result_isolated(self.pm.hook.hotplugd_choose_zone, expect=ZoneRequest, block=block,
                                       requested=requested, ledger=self.ledger, config=self.config)
        return chosen if chosen is not None else narrow(requested, block.valid_zones)

    async def pipeline(self, queue: deque[Waiting], runs: int, shared: anyio.CapacityLimiter | None,
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
                reports.append(await self.online_one(waiting))
                continue
            result = next(answers)
            self.ledger.unrecord(waiting.block, zone.zone_name)
            self.metrics.online_call.observe(share)
            if result.outcome is Outcome.TRANSIENT and self.config.scheduler.retries and not self.stopping:
                async with slot:
                    reports.append(await self.online_one(waiting, zone, tried=1, since=t0))
                continue
            now = self.clock()
            report = BlockReport(waiting.block, result, zone, 1, share, now - waiting.since)
            self._account(report)
            reports.append(report)
        return reports

    async def online_one(self, waiting: Waiting, zone: ZoneRequest | None = None, tried: int = 0,
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
