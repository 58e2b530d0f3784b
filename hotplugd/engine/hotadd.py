"""One info line per hot-add once all of it has settled: how many blocks and bytes, how long from its first add
event, who onlined them, and whether each was proven (read back online).

A hot-add is the run of add events of one domain between two idle moments (nothing queued, no phase running,
nothing left to read back): the kernel adds every block of a device before it onlines the first, so a device's
blocks make one hot-add. Blocks the kernel still holds half-online keep the domain busy, so the line comes only
when the kernel's final phase has ended too.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import structlog

from hotplugd.engine.book import BlockBook, Stage
from hotplugd.model import Block
from hotplugd.units import format_bytes

log = structlog.get_logger(__name__)


@dataclass
class HotAdd:
    started: float
    sizes: dict[int, int] = field(default_factory=dict)  # block index -> bytes
    by_hotplugd: set[int] = field(default_factory=set)  # blocks hotplugd's own writes onlined


class HotAddWatch:
    """The domain's open hot-add, summed up in one ``hotadd_settled`` line when the domain goes idle."""

    def __init__(self, domain: str, clock: Callable[[], float]) -> None:
        self.domain = domain
        self.clock = clock
        self.current: HotAdd | None = None

    def added(self, block: Block) -> None:
        if self.current is None:
            self.current = HotAdd(self.clock())
        self.current.sizes[block.index] = block.size

    def onlined_by_hotplugd(self, index: int) -> None:
        if self.current is not None and index in self.current.sizes:
            self.current.by_hotplugd.add(index)

    def settled(self, book: BlockBook) -> str | None:
        """Log the open hot-add (the domain is idle) and close it; returns the summary logged (None: none open)."""
        hot, self.current = self.current, None
        if hot is None:
            return None
        online = [i for i in hot.sizes if book.stage(i) is Stage.ONLINE]
        failed = [i for i in hot.sizes if book.stage(i) is Stage.FAILED]
        mine = len(hot.by_hotplugd.intersection(online))
        by = "by the kernel" if not mine else "by hotplugd" if mine == len(online) else \
            f"by the kernel ({len(online) - mine}) and hotplugd ({mine})"
        seconds = self.clock() - hot.started
        size = sum(hot.sizes[i] for i in online)
        gone = len(hot.sizes) - len(online) - len(failed)
        proof = "all proven" if len(online) == len(hot.sizes) else \
            f"{len(online)} of {len(hot.sizes)} proven, {len(failed)} failed, {gone} gone"
        summary = f"{len(online)} blocks, {format_bytes(size)} online in {seconds:.1f} s, {by}, {proof}" if online \
            else f"no block online after {seconds:.1f} s: {len(failed)} failed, {gone} gone"
        log.info("hotadd_settled", domain=self.domain, blocks=len(hot.sizes), online=len(online), failed=len(failed),
                 bytes=size, seconds=round(seconds, 3), by_hotplugd=mine, summary=summary)
        return summary
