"""The queue of added blocks waiting for the final phase. Bounded; never drops silently."""

from __future__ import annotations

from dataclasses import dataclass

from hotplugd.model import MEMMAP_DIVISOR, Block


@dataclass(slots=True)
class Waiting:
    block: Block
    since: float  # monotonic time of its add event
    #: Announced by an ``add`` event while hotplugd ran (not found by a scan, not a retry): where the
    #: kernel onlines, its walk over the hot-add may still be on its way to it.
    fresh: bool = False
    #: Found offline by the start-up scan while the kernel's auto-online was off (before the plan turned
    #: it on): added before, so no kernel onlines it. Where the kernel onlines, it is taken at once.
    kernel_off: bool = False


class PendingQueue:
    """Blocks waiting to be onlined, in arrival order, with their byte total, indexed by node.

    Bound: ``limit`` blocks. When full, ``add`` refuses and sets ``overflowed``;
    the daemon then rescans the host after the next phase, so a refused block
    is picked up again and none is lost.
    """

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._items: dict[int, Waiting] = {}  # arrival order: the first is the oldest
        self._nodes: dict[int, dict[int, Waiting]] = {}
        self.bytes = 0
        self.last_add: float | None = None
        #: The domain's last memory event (a kernel's ``add`` or ``online`` of any block, queued or not):
        #: where the kernel onlines, its grace runs from it.
        self.last_event: float | None = None
        #: The block of the domain's last ``online`` event: where the kernel's walk over a hot-add is (it
        #: onlines a device's blocks in ascending order, after adding them all).
        self.walk: int | None = None
        self._fresh_top: int | None = None  # the highest fresh queued block (may be stale high until recomputed)
        #: Until when the backend's promise of more adds (``BlockEvent.more``) holds phases back.
        self.held_until: float | None = None
        self.overflowed = False
        #: How many queued blocks are ``kernel_off`` (found at start with the kernel's onlining off).
        self.kernel_off = 0

    def __len__(self) -> int:
        return len(self._items)

    def __contains__(self, index: int) -> bool:
        return index in self._items

    def __repr__(self) -> str:
        return f"<PendingQueue {len(self)} blocks, {self.bytes >> 20} MiB>"

    def add(self, block: Block, now: float, *, fresh: bool = False, kernel_off: bool = False) -> bool:
        """Queue ``block`` (``fresh``: from an add event; ``kernel_off``: found at start with the kernel's
        onlining off); a block already queued keeps its place. False when full."""
        if block.index in self._items:
            return True
        if len(self._items) >= self.limit:
            self.overflowed = True
            return False
        waiting = Waiting(block, now, fresh, kernel_off)
        self.kernel_off += kernel_off
        if fresh and (self._fresh_top is None or block.index > self._fresh_top):
            self._fresh_top = block.index
        self._items[block.index] = waiting
        node = self._nodes.get(block.node)
        if node is None:
            node = self._nodes[block.node] = {}
        node[block.index] = waiting
        self.bytes += block.size
        self.last_add = now
        return True

    def discard(self, index: int) -> Waiting | None:
        """Drop a queued block (removed, or onlined by someone else); it, with its add time, or None."""
        waiting = self._items.pop(index, None)
        if waiting is None:
            return None
        node = self._nodes[waiting.block.node]
        del node[index]
        if not node:
            del self._nodes[waiting.block.node]
        self.bytes -= waiting.block.size
        self.kernel_off -= waiting.kernel_off
        if index == self._fresh_top:
            self._recount_fresh()
        return waiting

    def take(self, busy_nodes: set[int] | frozenset[int] = frozenset()) -> list[Waiting]:
        """Remove and return every queued block, in arrival order, except those of ``busy_nodes``."""
        if not busy_nodes or not busy_nodes & self._nodes.keys():
            taken = list(self._items.values())
            self._items.clear()
            self._nodes.clear()
            self.bytes = 0
            self.kernel_off = 0
            self._fresh_top = None
            return taken
        taken = []
        for node in [n for n in self._nodes if n not in busy_nodes]:
            taken.extend(self._nodes.pop(node).values())
        for waiting in taken:
            del self._items[waiting.block.index]
            self.bytes -= waiting.block.size
            self.kernel_off -= waiting.kernel_off
        taken.sort(key=lambda w: w.since)
        self._recount_fresh()
        return taken

    def _recount_fresh(self) -> None:
        self._fresh_top = max((i for i, w in self._items.items() if w.fresh), default=None)

    def kernel_off_indices(self) -> set[int]:
        """The queued blocks found at start with the kernel's onlining off (``Waiting.kernel_off``)."""
        return {index for index, waiting in self._items.items() if waiting.kernel_off} if self.kernel_off else set()

    @property
    def ahead_of_kernel(self) -> bool:
        """Is a fresh queued block above the kernel's walk (or has the walk not begun)? Then the kernel
        may not have reached it yet, however quiet it is: it onlines a hot-add in ascending order."""
        return self._fresh_top is not None and (self.walk is None or self._fresh_top > self.walk)

    @property
    def oldest(self) -> float | None:
        """When the longest-waiting block was added."""
        for waiting in self._items.values():
            return waiting.since
        return None

    @property
    def memmap_bytes(self) -> int:
        """The memmap the queued blocks already hold (1/64 of their size)."""
        return self.bytes // MEMMAP_DIVISOR
