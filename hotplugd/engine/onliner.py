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
from collections import deque
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager, nullcontext
from dataclasses import dataclass, field

import anyio
import structlog

from hotplugd.engine.context import EngineContext
from hotplugd.engine.queue import Waiting
from hotplugd.engine.zones import policy_request
from hotplugd.model import (
    Block,
    BlockReport,
    NodeLedger,
    OnlineResult,
    Outcome,
    ZoneRequest,
    zone_matches,
)

log = structlog.get_logger(__name__)

#: A block of a run and the zone chosen for it (None: removed while queued, not called).
_Item = tuple[Waiting, ZoneRequest | None]
#: A run after its backend call: its items, the call's results, and when the call started.
_Run = tuple[list[_Item], list[OnlineResult], float]

#: The slot of a run whose calls overlap nothing: entering it does not yield (a limiter's acquire does).
_UNSHARED = nullcontext()


@dataclass(eq=False, repr=False)
class Onliner:
    """Onlines one domain's blocks for its phases; holds the node ledger."""

    ctx: EngineContext
    ledger: NodeLedger
    #: Whether a block was removed since its phase took it (the domain's block book says).
    removed: Callable[[int], bool] = lambda index: False
    #: Whether the kernel onlines the domain's blocks: a block found online is then the kernel's, and
    #: the domain's read-back (:mod:`hotplugd.engine.verify`) accounts it, not this onliner.
    kernel_onlines: Callable[[], bool] = lambda: False
    #: Set on SIGTERM: finish the call in flight, take no more.
    stopping: bool = field(default=False, init=False)

    def __repr__(self) -> str:
        return f"<Onliner {type(self.ctx.backend).__name__} stopping={self.stopping}>"

    def choose_zone(self, block: Block) -> ZoneRequest:
        """The policy's request, then the plugins' choice: the core's own implementation, last,
        narrows the request to the block's valid zones (:mod:`hotplugd.plugin.builtin`)."""
        requested = policy_request(block, self.ledger, self.ctx.config.zones)
        chosen = self.ctx.hooks.choose_zone(block, requested, self.ledger, self.ctx.config)
        return requested if chosen is None else chosen

    async def pipeline(self, queue: deque[Waiting], runs: int, shared: anyio.Semaphore | None,
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
            t0 = self.ctx.clock()
            results = await self._call_many(items)
        return items, results, t0

    def _prepare(self, run: list[Waiting]) -> list[_Item]:
        """Choose each block's zone; reserve it in the ledger so the next choice sees it (None: removed)."""
        items: list[_Item] = []
        for waiting in run:
            if self.removed(waiting.block.index):
                items.append((waiting, None))
                continue
            items.append((waiting, self._reserve(waiting.block)))
        return items

    def _reserve(self, block: Block, zone: ZoneRequest | None = None) -> ZoneRequest:
        """Choose (unless given) and reserve ``block``'s zone in the node ledger until its report,
        so that every choice made meanwhile (other workers, the next run) sees it."""
        zone = zone or self.choose_zone(block)
        self.ledger.record(block, zone.zone_name)
        return zone

    async def _call_many(self, items: list[_Item]) -> list[OnlineResult]:
        """One backend call for the run's blocks still present (see :meth:`_call`)."""
        return await self._call([(w.block, zone) for w, zone in items if zone is not None], many=True)

    async def _call(self, calls: list[tuple[Block, ZoneRequest]], many: bool) -> list[OnlineResult]:
        """One backend call: ``online_many`` for a run (``many``), ``online`` for one block.

        A backend that raises, or answers for the wrong number of blocks, fails
        every block of the call with an error outcome (one place for both paths).
        """
        if not calls:
            return []
        try:
            if not many:
                return [await self.ctx.backend.online(*calls[0])]
            results = list(await self.ctx.backend.online_many(calls))
            if len(results) != len(calls):
                raise RuntimeError(f"online_many returned {len(results)} results for {len(calls)} blocks")
            return results
        except Exception as exc:  # noqa: BLE001 - isolate backend bugs to the call
            where = {"blocks": [b.index for b, _ in calls]} if many else {"block": calls[0][0].index}
            log.exception("backend_online_failed", **where)
            return [OnlineResult(Outcome.ERROR, detail=f"{type(exc).__name__}: {exc}")] * len(calls)

    async def _account_run(self, items: list[_Item], results: list[OnlineResult], t0: float,
                           slot: AbstractAsyncContextManager[object]) -> list[BlockReport]:
        """Report each block of a run; transient ones retry alone (holding ``slot``)."""
        reports: list[BlockReport] = []
        share = (self.ctx.clock() - t0) / max(1, len(results))
        answers = iter(results)
        for waiting, zone in items:
            if zone is None:  # removed while queued: reported gone, no call
                reports.append(await self.online_one(waiting))
                continue
            result = next(answers)
            self.ledger.unrecord(waiting.block, zone.zone_name)
            self.ctx.metrics.online_call.observe(share)
            if result.outcome is Outcome.TRANSIENT and self.ctx.config.scheduler.retries and not self.stopping:
                async with slot:
                    reports.append(await self.online_one(waiting, zone, tried=1, since=t0))
                continue
            now = self.ctx.clock()
            report = BlockReport(waiting.block, result, zone, 1, share, now - waiting.since)
            self.account(report)
            reports.append(report)
        return reports

    async def online_one(self, waiting: Waiting, zone: ZoneRequest | None = None, tried: int = 0,
                         since: float | None = None) -> BlockReport:
        """Online one block, retrying transient errors with backoff (``tried``: attempts made already)."""
        block = waiting.block
        cfg = self.ctx.config.scheduler
        clock = self.ctx.clock
        zone = self._reserve(block, zone)
        attempts = tried
        t0 = clock() if since is None else since
        while True:
            if attempts:  # a retry after a transient error
                self.ctx.metrics.retries.inc()
                await anyio.sleep(cfg.retry_backoff * (2 ** (attempts - 1)))
            attempts += 1
            if self.removed(block.index):
                result = OnlineResult(Outcome.GONE, detail="removed while queued")
                break
            call_start = clock()
            # Not cancelled on SIGTERM: ``stopping`` lets the call in flight finish.
            [result] = await self._call([(block, zone)], many=False)
            self.ctx.metrics.online_call.observe(clock() - call_start)
            if result.outcome is not Outcome.TRANSIENT or attempts > cfg.retries or self.stopping:
                break
        self.ledger.unrecord(block, zone.zone_name)
        now = clock()
        report = BlockReport(block, result, zone, attempts, now - t0, now - waiting.since)
        self.account(report)
        return report

    def account(self, report: BlockReport, *, kernel: bool = False, timed: bool = True) -> None:
        """The one place a block's final outcome is accounted: the outcome counter, the node ledger,
        the onlined counter, the add-to-online time, the zone check, the log and the hook.

        ``kernel``: a block the kernel onlined, read back by the domain's verifier (counted as the
        kernel's; a zone other than the one promised is an error). ``timed``: its add was seen.
        """
        result, block = report.result, report.block
        m = self.ctx.metrics
        m.child(m.outcomes, result.outcome.value, result.errno or 0).inc()
        if not kernel and result.outcome is Outcome.ALREADY_ONLINE and self.kernel_onlines():
            return  # the kernel's: the domain's verifier reads it back and accounts it (kernel=True)
        if kernel or result.outcome.success:
            self._account_online(report, kernel, timed)
        elif result.outcome is Outcome.KERNEL_DEFERRED:
            log.info("kernel_deferred", block=block.index, detail="the kernel's final phase will online it")
        elif result.outcome is not Outcome.GONE:
            log.error("online_failed", block=block.index, outcome=result.outcome.value,
                      errno=errno_mod.errorcode.get(result.errno or 0, result.errno), detail=result.detail,
                      attempts=report.attempts)
        self.ctx.hooks.block_outcome(report)

    def _account_online(self, report: BlockReport, kernel: bool, timed: bool) -> None:
        result, block = report.result, report.block
        m = self.ctx.metrics
        self.ledger.record(block, result.zone)
        if result.outcome is Outcome.ONLINED:
            onlined = m.kernel_onlined if kernel else m.onlined
            m.child(onlined, m.domain_label(block.domain), block.node, result.zone or "unknown").inc()
        if timed:
            m.add_to_online.observe(report.waited)
        if zone_matches(report.requested, result.zone):
            return
        m.zone_mismatch.inc()
        if kernel:
            log.error("zone_wrong", block=block.index, domain=block.domain, wanted=report.requested.value,
                      found=result.zone)
        else:
            log.warning("zone_mismatch", block=block.index, requested=report.requested.value, zone=result.zone)
