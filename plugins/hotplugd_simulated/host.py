"""A modelled host: memory blocks, each simulated kernel's online path, the hotplug lock and injected faults.

Time is real here (``anyio.sleep`` of each modelled cost): the daemon runs against it. For
sizes where sleeping would take minutes, :mod:`.predict` computes the same costs instead.
"""

from __future__ import annotations

import contextvars
import errno
import random
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

import anyio
import anyio.lowlevel

from hotplugd import Block, OnlineResult, Outcome, State, ZoneRequest

from .kernels import TRYLOCK_RETRY, chunks, kernel_workers
from .knobs import Knobs
from .settings import Settings
from .statefile import Saved, SavedBlock, StateFile

TRANSIENT = frozenset({errno.EBUSY, errno.ENOMEM})
#: Zero-cost onlines still yield to the event loop this often.
CHECKPOINT_EVERY = 64
#: Time one caller (task) has slept beyond its modelled costs so far. Event-loop
#: timers have millisecond granularity (epoll), so a 1.6 ms cost sleeps ~2 ms; the
#: next call of the same task sleeps that much less, keeping each lane's total
#: time equal to the sum of its costs.
_overslept: contextvars.ContextVar[float] = contextvars.ContextVar("overslept", default=0.0)


_ONLINED = {zone: OnlineResult(Outcome.ONLINED, zone=zone) for zone in ("Normal", "Movable")}


@dataclass(slots=True)
class HostBlock:
    index: int
    node: int
    state: State = State.OFFLINE
    zone: str | None = None
    poisoned: int = 0  # a permanent errno, once drawn

    @property
    def online_attr(self) -> int:
        """What ``memoryN/online`` reads: 1 once PREPARE ran, even while ``state`` reads offline."""
        return int(self.state in (State.ONLINE, State.KERNEL_DEFERRED))

    @property
    def sysfs_state(self) -> str:
        """What ``memoryN/state`` reads: a half-online block reads ``offline``."""
        return "online" if self.state is State.ONLINE else "offline"

    def view(self, size: int) -> Block:
        zones = (self.zone,) if self.online_attr and self.zone else ("Normal", "Movable")
        return Block(self.index, size, self.node, self.state, zones)


class Host:
    """The simulated machine. Deterministic for a seed: faults depend on (seed, block, attempt) only."""

    def __init__(self, settings: Settings, journal: StateFile | None = None) -> None:
        self.s = settings
        self.journal = journal
        self.resumed = Saved()  # what a state file said at start: the scenario resumes from it
        self.blocks: dict[int, HostBlock] = {}
        self.next_index = 0
        self.onlined_bytes = 0
        self.online_calls = 0
        self._attempts: dict[int, int] = {}
        self._locks = {n: anyio.Lock() for n in range(settings.nodes)} if settings.lock_model == "per-node" else {}
        self._global = anyio.Lock()
        self.costs = settings.costs()
        self.knobs = Knobs(settings.kernel, settings.auto_online, settings.kernel_ratio,
                           frozenset(settings.read_only_knobs))
        self.populated: Counter[tuple[int, str]] = Counter()  # (node, zone): blocks online or half-online
        self.lock_retries = 0  # trylocks lost (each one slept TRYLOCK_RETRY)
        self.inflight = self.max_inflight = 0  # onlines spending their cost at once
        self.changed = anyio.Event()  # set when a block goes online while someone waits (virtio-mem)
        self.waiting = 0
        self.offline_count = 0
        #: Monotonic times of the scenario's first plug and of the last block going online (kernel or writer).
        self.first_plug_at: float | None = None
        self.last_online_at: float | None = None
        self.prepared = 0  # blocks the seed's kernel left half-online (PREPARE done, its final phase to come)
        self._booting = True
        for node in range(settings.nodes):
            for _ in range(settings.boot_memory // settings.block_size):
                booted = self.plug(node)
                booted.state, booted.zone = State.ONLINE, "Normal"
                self.populated[node, "Normal"] += 1
                self.offline_count -= 1
            for _ in range(settings.offline_at_start // settings.block_size):
                self.plug(node)
        self._booting = False

    def __repr__(self) -> str:
        online = sum(1 for b in self.blocks.values() if b.state is State.ONLINE)
        return f"<Host {self.s.kernel} {len(self.blocks)} blocks, {online} online, lock={self.s.lock_model}>"

    def plug(self, node: int, step: int = -1) -> HostBlock:
        block = HostBlock(self.next_index, node)
        if self.first_plug_at is None and not self._booting:
            self.first_plug_at = time.monotonic()
        self.blocks[block.index] = block
        self.next_index += 1
        self.offline_count += 1
        if self.journal is not None:
            self.journal.plugged(block.index, node, step)
        return block

    def unplug(self, index: int, step: int = -1) -> None:
        block = self.blocks.pop(index, None)
        if block is not None and block.state is State.OFFLINE:
            self.offline_count -= 1
        if block is not None and self.journal is not None:
            self.journal.unplugged(index, step)

    def finished(self, step: int) -> None:
        """Scenario step ``step`` played to its end (a restarted host does not replay it)."""
        if self.journal is not None:
            self.journal.finished(step)

    def restore(self) -> None:
        """Load the blocks from the state file when there is one, then compact it (blocking: from a thread)."""
        if self.journal is None:
            return
        saved = self.journal.load()
        if saved is None:
            saved = Saved({b.index: SavedBlock(b.index, b.node, b.zone, b.poisoned) for b in self.blocks.values()},
                          self.next_index, self.onlined_bytes)
        else:
            self.blocks = {b.index: HostBlock(b.index, b.node, State.ONLINE if b.zone else State.OFFLINE, b.zone,
                                              b.poisoned) for b in saved.blocks.values()}
            self.next_index, self.onlined_bytes = saved.next_index, saved.onlined_bytes
            self.offline_count = sum(1 for b in self.blocks.values() if b.state is State.OFFLINE)
            self.populated = Counter((b.node, b.zone) for b in self.blocks.values() if b.zone)
        self.resumed = saved
        self.journal.open(saved)

    async def wait_for_change(self) -> None:
        """Sleep until some block goes online."""
        self.waiting += 1
        try:
            await self.changed.wait()
        finally:
            self.waiting -= 1

    def offline_bytes(self, indices: range | None = None) -> int:
        blocks = self.blocks.values() if indices is None else (self.blocks[i] for i in indices if i in self.blocks)
        return sum(self.s.block_size for b in blocks if b.state is not State.ONLINE)  # half-online counts

    @property
    def mem_available(self) -> int:
        """MemAvailable: the configured base, plus what was onlined, minus memmap of offline blocks."""
        memmap = self.offline_count * (self.s.block_size // 64)
        return max(0, self.s.mem_available + self.onlined_bytes - memmap)

    def _fault(self, index: int) -> int | None:
        if not self.s.fault_rate:
            return None
        attempt = self._attempts[index] = self._attempts.get(index, 0) + 1
        rng = random.Random(f"{self.s.seed}:{index}:{attempt}")
        if rng.random() >= self.s.fault_rate:
            return None
        return rng.choice(self.s.fault_errnos)

    async def spend(self, cost: float) -> None:
        """Take ``cost`` seconds of this caller's time, compensating earlier timer overshoot."""
        owed = cost - _overslept.get()
        if owed <= 0:
            _overslept.set(-owed)
            await anyio.lowlevel.checkpoint()
            return
        start = time.monotonic()
        await anyio.sleep(owed)
        _overslept.set(max(0.0, time.monotonic() - start - owed))

    async def _hold(self, lock: anyio.Lock | None, cost: float) -> None:
        """Spend ``cost`` under ``lock``, taken as mainline takes ``device_hotplug_lock`` from sysfs:
        by trylock; a loser sleeps ``TRYLOCK_RETRY`` (msleep(5) at HZ=250) and restarts."""
        if lock is None:
            if cost:
                await self._spending(cost)
            elif self.online_calls % CHECKPOINT_EVERY == 0:
                await anyio.lowlevel.checkpoint()
            return
        while True:
            try:
                lock.acquire_nowait()
                break
            except anyio.WouldBlock:
                self.lock_retries += 1
                await anyio.sleep(TRYLOCK_RETRY)
        try:
            await self._spending(cost)
        finally:
            lock.release()

    async def _spending(self, cost: float) -> None:
        self.inflight += 1
        self.max_inflight = max(self.max_inflight, self.inflight)
        try:
            await self.spend(cost)
        finally:
            self.inflight -= 1

    def _lock(self, block: HostBlock) -> anyio.Lock | None:
        return self._global if self.s.lock_model == "global" else self._locks.get(block.node)

    @property
    def workers(self) -> int:
        """Workers per node of the kernel's own parallel onlining (per-block, anolis), at its ratio now."""
        return kernel_workers(self.s.cpus_per_node, self.knobs.ratio)

    def _defers(self, block: HostBlock, zone: str) -> bool:
        """Anolis takes the PREPARE path when its ratio is set and the target zone is populated."""
        return self.s.kernel == "anolis" and self.knobs.ratio > 0 and self.populated[block.node, zone] > 0

    def _cost(self, deferring: bool) -> float:
        if deferring:
            return self.costs.prepare
        online = self.s.nodes * self.s.boot_memory + self.onlined_bytes
        growth = self.s.cost_per_online_gib * online / (1 << 30)
        if self.s.kernel == "per-block" and self.knobs.ratio > 0:
            return self.costs.per_block(self.workers) + growth
        return self.costs.serial + growth

    def _set_online(self, block: HostBlock) -> None:
        block.state = State.ONLINE
        self.last_online_at = time.monotonic()
        self.onlined_bytes += self.s.block_size
        self.offline_count -= 1
        if self.journal is not None and block.zone:
            self.journal.onlined(block.index, block.zone)
        if self.waiting:
            self.notify()

    async def kernel_online(self, block: HostBlock) -> None:
        """The kernel's own onlining of a block it just added (``auto_online_blocks`` not offline),
        into the zone its knobs choose."""
        size = self.s.block_size
        node = block.node
        zone = self.knobs.zone(self.populated[node, "Normal"] * size, self.populated[node, "Movable"] * size, size)
        deferring = self._defers(block, zone)
        await self._hold(self._lock(block), self._cost(deferring))
        if block.index not in self.blocks or block.state is not State.OFFLINE:
            return
        block.zone = zone
        self.populated[block.node, zone] += 1
        if deferring:
            block.state = State.KERNEL_DEFERRED
            self.prepared += 1
        else:
            self._set_online(block)

    async def deferred_online_memory(self, node: int, indices: Sequence[int]) -> None:
        """Anolis's final phase over a node's range: one worker per chunk, each block online at its
        chunk's pace, with no uevent. Skips online blocks, and everything while auto-online is off."""
        if not self.knobs.kernel_onlines:
            return
        todo = [self.blocks[i] for i in indices if i in self.blocks and self.blocks[i].state is State.KERNEL_DEFERRED]
        parts = chunks(len(todo), self.workers)
        if len(parts) > 1:
            await self.spend(self.costs.setup)

        async def worker(mine: list[HostBlock]) -> None:
            for block in mine:
                await self._spending(self.costs.deferred)
                if block.index in self.blocks:
                    self._set_online(block)

        async with anyio.create_task_group() as tg:
            start = 0
            for size in parts:
                tg.start_soon(worker, todo[start:start + size])
                start += size

    async def online(self, index: int, zone: ZoneRequest) -> OnlineResult:
        """Write ``zone`` to ``memory<index>/state``, then read back, as the kernel would answer."""
        self.online_calls += 1
        block = self.blocks.get(index)
        if block is None:
            return OnlineResult(Outcome.GONE, errno=errno.ENOENT, detail="no such block")
        if block.state is State.ONLINE:
            return OnlineResult(Outcome.ALREADY_ONLINE, zone=block.zone, errno=errno.EINVAL)
        if block.state is State.KERNEL_DEFERRED:  # state reads offline, online reads 1: only the kernel finishes it
            return OnlineResult(Outcome.KERNEL_DEFERRED, zone=block.zone, errno=errno.EINVAL)
        name = "Movable" if zone is ZoneRequest.MOVABLE else "Normal"
        deferring = self._defers(block, name)
        fault = block.poisoned or self._fault(index)
        await self._hold(self._lock(block), self._cost(deferring))
        if fault in TRANSIENT:
            return OnlineResult(Outcome.TRANSIENT, errno=fault)
        if fault == errno.ENOENT:
            self.unplug(index)
            return OnlineResult(Outcome.GONE, errno=fault, detail="removed")
        if fault:
            if not block.poisoned and self.journal is not None:
                self.journal.poisoned(index, fault)
            block.poisoned = fault
            return OnlineResult(Outcome.PERMANENT, errno=fault)
        if index not in self.blocks:  # removed while we held the lock
            return OnlineResult(Outcome.GONE, errno=errno.ENOENT)
        if block.state is not State.OFFLINE:  # another writer got there while we slept on the lock
            return OnlineResult(Outcome.ALREADY_ONLINE if block.state is State.ONLINE else Outcome.KERNEL_DEFERRED,
                                zone=block.zone, errno=errno.EINVAL)
        block.zone = name
        self.populated[block.node, name] += 1
        if deferring:  # PREPARE only: left half-online until the kernel's final phase runs
            block.state = State.KERNEL_DEFERRED
            self.prepared += 1
            return OnlineResult(Outcome.KERNEL_DEFERRED, zone=name)
        self._set_online(block)
        return _ONLINED[name]

    def notify(self) -> None:
        """Wake whoever waits for a change (virtio-mem waiting for its blocks to be onlined)."""
        self.changed.set()
        self.changed = anyio.Event()
