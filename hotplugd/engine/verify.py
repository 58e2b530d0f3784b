"""Proof of the blocks another onliner onlined: read back, zone checked, timed and counted.

Where the plan has the kernel online (its own auto-online, set up by hotplugd),
each block's ``online`` event is followed by a read-back of just that block
(``Backend.verify``): it is counted (``hotplugd_kernel_onlined_blocks_total``),
timed from its add (the add-to-online histogram, as for hotplugd's own) and
checked against the zone the policy promised. A block in another zone is an
error outcome, logged with the zone wanted and the zone found.

The seed's kernel (Anolis) may hold a block half-online: its ``online`` event
came, its pages are not usable yet, and no event marks the end of the kernel's
final phase. Such a block is polled, within ``scheduler.kernel_phase_timeout``;
the kernel's phase is measured, and a block still half-online after the bound is
an alert (only the kernel can finish it).
"""

from __future__ import annotations

import structlog

from hotplugd.engine.book import BlockBook, Record
from hotplugd.engine.context import EngineContext
from hotplugd.engine.onliner import Onliner
from hotplugd.engine.zones import promised_zone
from hotplugd.model import Block, BlockReport, OnlineResult, Outcome, State, zone_matches

log = structlog.get_logger(__name__)

#: How often a half-online block is read back at first; the interval doubles up to ``MAX_POLL``.
FIRST_POLL = 0.05
MAX_POLL = 1.0


class Verifier:
    """Reads back one domain's blocks that another onliner took, and proves each one."""

    def __init__(self, ctx: EngineContext, book: BlockBook, onliner: Onliner) -> None:
        self.ctx = ctx
        self.book = book
        self.onliner = onliner  # its node ledger learns where the kernel put each block
        self.stuck = 0  # this domain's blocks held half-online past the bound (logged once per episode)

    def __repr__(self) -> str:
        return f"<Verifier {self.book.verifying} to read back>"

    async def verify(self, records: list[Record]) -> None:
        """Read back ``records``' blocks in one backend call and judge each."""
        now = self.ctx.clock()
        blocks = [r.block for r in records if r.block is not None]
        try:
            seen = await self.ctx.backend.verify(blocks)
        except Exception:  # noqa: BLE001 - a backend bug: read back again later, never lose the block
            log.exception("verify_failed", blocks=[b.index for b in blocks])
            for record in records:
                record.next_poll = now + MAX_POLL
            return
        for record, block in zip(records, seen, strict=True):
            if self.book.current(record):  # not removed (and added again) while it was read back
                self._judge(record, block, self.ctx.clock())

    def _judge(self, record: Record, block: Block | None, now: float) -> None:
        assert record.block is not None
        index = record.block.index
        if block is None:
            self.book.forget(index)  # removed meanwhile
        elif block.state is State.KERNEL_DEFERRED:
            self._deferred(record, block, now)
        elif block.state is State.ONLINE:
            if record.deferred_since is not None:
                self.ctx.metrics.kernel_phase.observe(now - record.deferred_since)
            if record.stuck:
                self.ctx.metrics.kernel_stuck.dec()
                self.stuck -= 1
            self._prove(record, block, now)
            self.book.settled_online(block)
        else:  # offline after all: the kernel left it, hotplugd onlines it (after the grace, where the kernel onlines)
            self.book.forget(index)
            if block.state is State.OFFLINE and not self.book.queue_block(block, record.since or now):
                self.ctx.metrics.queue_full.inc()

    def _deferred(self, record: Record, block: Block, now: float) -> None:
        first = record.deferred_since is None
        held = 0.0 if first else now - (record.deferred_since or now)
        self.book.still_deferred(record, now, min(MAX_POLL, max(FIRST_POLL, held / 2)))
        if first:
            log.info("kernel_deferred", block=block.index, domain=block.domain,
                     detail="the kernel's final phase will online it")
        elif not record.stuck and held > self.ctx.config.scheduler.kernel_phase_timeout:
            record.stuck = True
            self.ctx.metrics.kernel_stuck.inc()
            self.stuck += 1
            if self.stuck == 1:  # one error per episode; the gauge counts every block, the rest log at debug
                log.error("kernel_deferred_stuck", block=block.index, domain=block.domain, seconds=round(held, 1),
                          hint="only the kernel can finish it: its deferred final phase did not run "
                               "(is auto-online off while parallel_hotplug_ratio is set?); further blocks are "
                               "counted in hotplugd_kernel_deferred_stuck_blocks, not logged one by one")
            else:
                log.debug("kernel_deferred_stuck", block=block.index, domain=block.domain, seconds=round(held, 1))

    def _prove(self, record: Record, block: Block, now: float) -> None:
        """Judge a block the kernel onlined against the zone the policy promised; the onliner accounts it
        (counted, timed, in the ledger and hooked as if hotplugd had written it)."""
        promise = promised_zone(block, self.ctx.config.zones)
        result = OnlineResult(Outcome.ONLINED, zone=block.zone)
        if not zone_matches(promise, block.zone):
            detail = f"the kernel onlined it into {block.zone}; the policy promised {promise.value}"
            result = OnlineResult(Outcome.ERROR, zone=block.zone, detail=detail)
        waited = now - record.since if record.since is not None else 0.0
        self.onliner.account(BlockReport(block, result, promise, 0, 0.0, waited), kernel=True,
                             timed=record.since is not None)
