"""The block book: one record per block of a domain, in exactly one state.

A block the domain knows of is queued (waiting in the :class:`PendingQueue`,
which keeps arrival order and the per-node index), in a phase, online, failed
(with the outcome and, unless permanent, when it is queued again), removed
while a phase still holds it, or to verify: another onliner (the kernel) onlined
it, or holds it half-online, and hotplugd reads it back. Every event changes one
record; nothing else holds per-block state.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable
from dataclasses import dataclass

from hotplugd.engine.queue import PendingQueue, Waiting
from hotplugd.model import Block, Outcome, RescanReason, State


class Stage(enum.Enum):
    QUEUED = "queued"
    IN_PHASE = "in_phase"
    ONLINE = "online"
    FAILED = "failed"
    #: Removed while a phase held it: the phase reports it gone, then the record goes.
    REMOVED = "removed"
    #: Onlined (or held half-online) by the kernel: to be read back, at ``next_poll``.
    VERIFY = "verify"


@dataclass(slots=True)
class Record:
    stage: Stage
    block: Block | None = None
    #: FAILED: the outcome that failed it.
    outcome: Outcome | None = None
    #: FAILED: when it is queued again (None: not before the next rescan).
    retry_at: float | None = None
    #: IN_PHASE: announced again (a replay, a guest's agent back) while its phase ran; if the
    #: phase fails it, it is queued again at once.
    added_again: bool = False
    #: VERIFY: when it was added (None: unknown), when to read it back next, since when the
    #: kernel has held it half-online (None: not seen so), and whether that outlasted the bound.
    since: float | None = None
    next_poll: float = 0.0
    deferred_since: float | None = None
    stuck: bool = False


class BlockBook:
    """Every block of one domain that is queued, in a phase, online, failed, or removed in a phase."""

    def __init__(self, queue_limit: int) -> None:
        self.queue = PendingQueue(queue_limit)
        self._records: dict[int, Record] = {}
        self._failed = 0
        #: Indexes of the records the loop visits each turn (failed with a retry time, to verify):
        #: never a walk over every online block.
        self._retrying: dict[int, Record] = {}
        self._verifying: dict[int, Record] = {}

    def __repr__(self) -> str:
        return f"<BlockBook {len(self._records)} blocks, {len(self.queue)} queued, {self._failed} failed>"

    def __len__(self) -> int:
        return len(self._records)

    def stage(self, index: int) -> Stage | None:
        record = self._records.get(index)
        return None if record is None else record.stage

    def _set(self, index: int, record: Record | None) -> None:
        """The one place a record changes: keeps the failed and retry counts."""
        old = self._records.get(index)
        if old is not None and old.stage is Stage.FAILED:
            self._failed -= 1
        self._retrying.pop(index, None)
        self._verifying.pop(index, None)
        if record is None:
            self._records.pop(index, None)
            return
        if record.stage is Stage.FAILED:
            self._failed += 1
            if record.retry_at is not None:
                self._retrying[index] = record
        elif record.stage is Stage.VERIFY:
            self._verifying[index] = record
        self._records[index] = record

    # -- what the scheduler asks -------------------------------------------------------

    def busy(self, index: int) -> bool:
        """Online, held by a running phase, or being verified: an add for it changes nothing."""
        return self.stage(index) in (Stage.ONLINE, Stage.IN_PHASE, Stage.VERIFY)

    def is_removed(self, index: int) -> bool:
        return self.stage(index) is Stage.REMOVED

    @property
    def failed(self) -> dict[int, Outcome]:
        """Failed blocks and their outcomes (a copy)."""
        return {i: r.outcome for i, r in self._records.items() if r.stage is Stage.FAILED and r.outcome}

    @property
    def failed_count(self) -> int:
        return self._failed

    @property
    def verifying(self) -> int:
        return len(self._verifying)

    @property
    def unsettled(self) -> bool:
        """Blocks still to read back, but for those the kernel holds half-online past the bound."""
        return any(not r.stuck for r in self._verifying.values())

    @property
    def in_phase(self) -> set[int]:
        """Blocks held by a running phase (a copy)."""
        return {i for i, r in self._records.items() if r.stage in (Stage.IN_PHASE, Stage.REMOVED)}

    # -- events ------------------------------------------------------------------------

    def queue_block(self, block: Block, now: float, *, fresh: bool = False, kernel_off: bool = False) -> bool:
        """Queue ``block`` (again; ``fresh``: from an add event; ``kernel_off``: see :class:`Waiting`); False when
        the queue is full (``overflowed``)."""
        if not self.queue.add(block, now, fresh=fresh, kernel_off=kernel_off):
            return False
        self._set(block.index, Record(Stage.QUEUED, block))
        return True

    def announced_again(self, index: int) -> bool:
        """An add for a block a phase holds: remember it (True), so a failure queues it at once."""
        record = self._records.get(index)
        if record is None or record.stage is not Stage.IN_PHASE:
            return False
        record.added_again = True
        return True

    def remove(self, index: int) -> None:
        """The block is gone: a phase that holds it reports it gone; otherwise it is forgotten."""
        self.queue.discard(index)
        record = self._records.get(index)
        if record is not None and record.stage is Stage.IN_PHASE:
            self._set(index, Record(Stage.REMOVED, record.block))
        else:
            self._set(index, None)

    def came_online(self, index: int) -> tuple[Waiting | None, bool, bool]:
        """An ``online`` event: (its queue entry if it was queued, it was failed with a retry set,
        it was news to the book). A block a phase holds, or that is being verified, stays so.
        """
        record = self._records.get(index)
        if record is not None and record.stage in (Stage.IN_PHASE, Stage.REMOVED, Stage.VERIFY):
            return None, False, False
        queued = self.queue.discard(index)
        retrying = record is not None and record.stage is Stage.FAILED and record.retry_at is not None
        first = record is None or record.stage is not Stage.ONLINE
        self._set(index, Record(Stage.ONLINE, record.block if record else None))
        return queued, retrying, first

    # -- verification of another onliner's blocks ---------------------------------------------

    def verify(self, block: Block, since: float | None, now: float, *, deferred: bool = False) -> None:
        """Read ``block`` back at once (the kernel onlined it, or holds it half-online: ``deferred``)."""
        self.queue.discard(block.index)
        self._set(block.index, Record(Stage.VERIFY, block, since=since, next_poll=now,
                                      deferred_since=now if deferred else None))

    def due_verifications(self, now: float) -> list[Record]:
        return [r for r in self._verifying.values() if r.next_poll <= now]

    def next_poll(self, now: float) -> float | None:
        """Seconds until a block is due to be read back (None: none is)."""
        if not self._verifying:
            return None
        return max(0.0, min(r.next_poll for r in self._verifying.values()) - now)

    def still_deferred(self, record: Record, now: float, interval: float) -> None:
        """Read back half-online: poll again after ``interval``."""
        if record.deferred_since is None:
            record.deferred_since = now
        record.next_poll = now + interval

    def current(self, record: Record) -> bool:
        """Whether ``record`` is still its block's: an event may replace it while it is read back."""
        return record.block is not None and self._records.get(record.block.index) is record

    def settled_online(self, block: Block) -> None:
        """Read back online: known online (a verdict on a block being verified, else nothing)."""
        if self.stage(block.index) is Stage.VERIFY:
            self._set(block.index, Record(Stage.ONLINE, block))

    def forget(self, index: int) -> None:
        """Read back gone or offline: forgotten (a verdict on a block being verified, else nothing)."""
        if self.stage(index) is Stage.VERIFY:
            self._set(index, None)

    def went_offline(self, index: int) -> None:
        if self.stage(index) is Stage.ONLINE:
            self._set(index, None)

    # -- phases ------------------------------------------------------------------------

    def take(self, busy_nodes: set[int] | frozenset[int] = frozenset()) -> list[Waiting]:
        """Every queued block but those of ``busy_nodes``, now held by a phase."""
        batch = self.queue.take(busy_nodes=busy_nodes)
        for waiting in batch:
            self._set(waiting.block.index, Record(Stage.IN_PHASE, waiting.block))
        return batch

    def found_online(self, block: Block, since: float | None, now: float, *, verify: bool) -> None:
        """A phase found ``block`` online already (another onliner was first): read back (``verify``:
        the kernel's, proved like any it onlined) or known online."""
        record = self._records.get(block.index)
        if record is not None and record.stage is Stage.QUEUED:
            return  # removed and added again meanwhile: its new queue entry stands
        if record is not None and record.stage is Stage.REMOVED:
            self._set(block.index, None)
        elif verify:
            self.verify(block, since, now)
        else:
            self._set(block.index, Record(Stage.ONLINE, block))

    def untouched(self, waiting: Waiting) -> None:
        """A stopping phase never tried it: queued again, with its first add's time (unless removed)."""
        removed = self.is_removed(waiting.block.index)
        self._set(waiting.block.index, None)
        if not removed:
            self.queue_block(waiting.block, waiting.since, fresh=waiting.fresh)

    def finished(self, block: Block, outcome: Outcome, now: float, retry_after: float) -> bool:
        """A phase's final outcome for ``block``; True when it counts as onlined."""
        index = block.index
        record = self._records.get(index)
        if record is not None and record.stage is Stage.QUEUED:
            return outcome.success  # removed and added again meanwhile: its new queue entry stands
        if outcome is Outcome.GONE or (record is not None and record.stage is Stage.REMOVED):
            self._set(index, None)  # gone, whatever the write did: an add of the same block is news again
            return outcome.success
        if outcome.success:
            self._set(index, Record(Stage.ONLINE, block))
            return True
        if outcome is Outcome.KERNEL_DEFERRED:  # the kernel's final phase will finish it: watched, not retried
            self.verify(block, None, now, deferred=True)
            return False
        added_again = record is not None and record.added_again
        if outcome is not Outcome.PERMANENT:
            self._set(index, None)
            if added_again and self.queue_block(block, now):
                return False  # announced again while it failed: the cause may be gone
        retry_at = now + retry_after if outcome is not Outcome.PERMANENT and retry_after > 0 else None
        self._set(index, Record(Stage.FAILED, block, outcome, retry_at))
        return False

    # -- retries -----------------------------------------------------------------------

    def next_retry(self, now: float) -> float | None:
        """Seconds until the next failed block is due to be queued again (None: none is)."""
        if not self._retrying:
            return None
        return max(0.0, min(r.retry_at for r in self._retrying.values() if r.retry_at is not None) - now)

    def requeue_due(self, now: float) -> None:
        """Queue again each failed block whose retry is due (while the queue has room)."""
        for record in [r for r in self._retrying.values() if r.retry_at is not None and r.retry_at <= now]:
            assert record.block is not None
            self._set(record.block.index, None)
            if not self.queue_block(record.block, now):
                self._set(record.block.index, record)  # full: it stays failed, due again next time

    # -- scans -------------------------------------------------------------------------

    def apply_scan(self, blocks: Iterable[Block], reason: RescanReason, now: float, *,
                   kernel_off: bool = False) -> None:
        """What a full scan says: online blocks are known online, failures get another chance
        (a permanent one only on an operator's request), blocks the seed's kernel holds half-online
        are watched, and every offline block nobody holds is queued, in index order, while the
        queue has room (where the kernel onlines, it waits ``kernel_grace`` there first, unless ``kernel_off``:
        the start-up scan with the kernel's auto-online off until then, which no kernel onlines)."""
        blocks = list(blocks)
        offline = {b.index for b in blocks if b.state is State.OFFLINE}
        for index, record in list(self._records.items()):
            if record.stage is Stage.ONLINE:
                self._set(index, None)  # the scan says again which are online
            elif record.stage is Stage.FAILED and not (
                    record.outcome is Outcome.PERMANENT and reason is not RescanReason.REQUEST and index in offline):
                self._set(index, None)
        for block in blocks:
            if block.index in self._records:
                continue
            if block.state is State.ONLINE:
                self._set(block.index, Record(Stage.ONLINE, block))
            elif block.state is State.KERNEL_DEFERRED:
                self.verify(block, None, now, deferred=True)
        self.queue.overflowed = False
        for block in sorted(blocks, key=lambda b: b.index):
            if block.state is not State.OFFLINE or block.index in self._records:
                continue
            if not self.queue_block(block, now, kernel_off=kernel_off):
                break  # full: the rescan after the next phase takes the rest
