"""A modelled host: memory blocks, per-block online cost, the hotplug lock and injected faults."""

from __future__ import annotations

import contextvars
import errno
import random
import time
from dataclasses import dataclass

import anyio
import anyio.lowlevel

from hotplugd import Block, OnlineResult, Outcome, State, ZoneRequest

from .settings import Settings
from .statefile import Saved, SavedBlock, StateFile

#: A loser of mainline's device_hotplug_lock trylock sleeps this long and restarts the syscall.
TRYLOCK_RETRY = 0.005
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

    def view(self, size: int) -> Block:
        zones = (self.zone,) if self.state is State.ONLINE and self.zone else ("Normal", "Movable")
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
        self._locks = {n: anyio.Lock() for n in range(settings.nodes)} if settings.lock == "per-node" else {}
        self._global = anyio.Lock()
        self.changed = anyio.Event()  # set when a block goes online while someone waits (virtio-mem)
        self.waiting = 0
        self.offline_count = 0
        for node in range(settings.nodes):
            for _ in range(settings.boot_memory // settings.block_size):
                booted = self.plug(node)
                booted.state, booted.zone = State.ONLINE, "Normal"
                self.offline_count -= 1
            for _ in range(settings.offline_at_start // settings.block_size):
                self.plug(node)

    def __repr__(self) -> str:
        online = sum(1 for b in self.blocks.values() if b.state is State.ONLINE)
        return f"<Host {len(self.blocks)} blocks, {online} online, lock={self.s.lock}>"

    def plug(self, node: int, step: int = -1) -> HostBlock:
        block = HostBlock(self.next_index, node)
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
        return sum(self.s.block_size for b in blocks if b.state is State.OFFLINE)

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

    async def _spend(self, cost: float) -> None:
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
        """Spend ``cost`` under ``lock`` with mainline's trylock-and-restart behaviour."""
        if lock is None:
            if cost:
                await self._spend(cost)
            elif self.online_calls % CHECKPOINT_EVERY == 0:
                await anyio.lowlevel.checkpoint()
            return
        while lock.locked():
            await anyio.sleep(TRYLOCK_RETRY)
        async with lock:
            await self._spend(cost)

    async def online(self, index: int, zone: ZoneRequest) -> OnlineResult:
        """Write ``zone`` to ``memory<index>/state``, then read back, as the kernel would answer."""
        self.online_calls += 1
        block = self.blocks.get(index)
        if block is None:
            return OnlineResult(Outcome.GONE, errno=errno.ENOENT, detail="no such block")
        lock = self._global if self.s.lock == "global" else self._locks.get(block.node)
        if block.state is State.ONLINE:
            return OnlineResult(Outcome.ALREADY_ONLINE, zone=block.zone, errno=errno.EINVAL)
        fault = block.poisoned or self._fault(index)
        await self._hold(lock, self.s.block_cost())
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
        block.state = State.ONLINE
        block.zone = "Movable" if zone is ZoneRequest.MOVABLE else "Normal"
        self.onlined_bytes += self.s.block_size
        self.offline_count -= 1
        if self.journal is not None:
            self.journal.onlined(index, block.zone)
        if self.waiting:
            self.notify()
        return _ONLINED[block.zone]

    def notify(self) -> None:
        """Wake whoever waits for a change (virtio-mem waiting for its blocks to be onlined)."""
        self.changed.set()
        self.changed = anyio.Event()
