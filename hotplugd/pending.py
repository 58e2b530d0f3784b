"""The queue of added blocks waiting for the final phase. Bounded; never drops silently."""

from __future__ import annotations

from dataclasses import dataclass

from .model import MEMMAP_DIVISOR, Block


@dataclass(slots=True)
class Waiting:
    block: Block
    since: float  # monotonic time of its add event


class PendingQueue:
    """Blocks waiting to be onlined, in arrival order, with their byte total.

    Bound: ``limit`` blocks. When full, ``add`` refuses and sets ``overflowed``;
    the daemon then rescans the host after the next phase, so a refused block
    is picked up again and none is lost.
    """

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._items: dict[int, Waiting] = {}
        self.bytes = 0
        self.last_add: float | None = None
        self.overflowed = False

    def __len__(self) -> int:
        return len(self._items)

    def __contains__(self, index: int) -> bool:
        return index in self._items

    def __repr__(self) -> str:
        return f"<PendingQueue {len(self)} blocks, {self.bytes >> 20} MiB>"

    def add(self, block: Block, now: float) -> bool:
        """Queue ``block``; a block already queued keeps its place. False when full."""
        if block.index in self._items:
            return True
        if len(self._items) >= self.limit:
            self.overflowed = True
            return False
        self._items[block.index] = Waiting(block, now)
        self.bytes += block.size
        self.last_add = now
        return True

    def discard(self, index: int) -> Block | None:
        """Drop a queued block (removed, or onlined by someone else)."""
        waiting = self._items.pop(index, None)
        if waiting is None:
            return None
        self.bytes -= waiting.block.size
        return waiting.block

    def take(self, count: int | None = None) -> list[Waiting]:
        """Remove and return the ``count`` oldest entries (all when None)."""
        if count is None or count >= len(self._items):
            taken = list(self._items.values())
            self._items.clear()
            self.bytes = 0
            return taken
        taken = []
        for index in list(self._items)[:count]:
            waiting = self._items.pop(index)
            self.bytes -= waiting.block.size
            taken.append(waiting)
        return taken

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
