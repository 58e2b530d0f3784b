"""A programmable in-memory host and the backend over it, for tests.

Unlike the ``simulated`` plugin (a model for demos and benchmarks), the fake
host does exactly what a test tells it: which blocks exist, what each online
call answers, and which events arrive when (``inject``).
"""

from __future__ import annotations

import errno
from collections import defaultdict, deque
from collections.abc import AsyncIterator, Callable, Iterable

import anyio
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from hotplugd.model import (
    HOST_DOMAIN,
    Action,
    Block,
    BlockEvent,
    OnlineResult,
    Outcome,
    Rescan,
    Scan,
    State,
    Topology,
    ZoneRequest,
)
from hotplugd.plugin.backend import Backend

BLOCK = 128 << 20

#: A scripted answer: an Outcome (with an optional errno), or an exception to raise.
Answer = OnlineResult | BaseException


class FakeHost:
    """Blocks by index, a topology, and per-block scripted answers for ``online``."""

    def __init__(self, nodes: dict[int, int] | None = None, mem_available: int = 64 << 30,
                 block_size: int = BLOCK, kernel_onlines: bool = False, domain: str = HOST_DOMAIN) -> None:
        self.domain = domain  # every block of this host belongs to it
        self.cpus_per_node = nodes or {0: 4}
        self.mem_available = mem_available
        self.block_size = block_size
        self.kernel_onlines = kernel_onlines
        self.blocks: dict[int, Block] = {}
        self.answers: dict[int, deque[Answer]] = defaultdict(deque)
        self.calls: list[tuple[int, ZoneRequest]] = []
        self.cost = 0.0  # seconds each online call takes
        self.node_cost: dict[int, float] = {}  # per-node overrides of ``cost``
        self.running = 0
        self.max_running = 0

    def add(self, index: int, node: int = 0, state: State = State.OFFLINE,
            zones: tuple[str, ...] = ("Normal", "Movable")) -> Block:
        block = Block(index, self.block_size, node, state, zones, self.domain)
        self.blocks[index] = block
        return block

    def script(self, index: int, *answers: Answer) -> None:
        """Queue answers for the next online calls of ``index`` (then the default: onlined)."""
        self.answers[index].extend(answers)

    def topology(self) -> Topology:
        return Topology(dict(self.cpus_per_node), self.mem_available, self.block_size, self.kernel_onlines)

    async def online(self, block: Block, zone: ZoneRequest) -> OnlineResult:
        self.calls.append((block.index, zone))
        self.running += 1
        self.max_running = max(self.max_running, self.running)
        try:
            cost = self.node_cost.get(block.node, self.cost)
            if cost:
                await anyio.sleep(cost)
            else:
                await anyio.lowlevel.checkpoint()
        finally:
            self.running -= 1
        queued = self.answers.get(block.index)
        if queued:
            answer = queued.popleft()
            if isinstance(answer, BaseException):
                raise answer
            if answer.outcome.success:
                self._set_online(block.index, answer.zone or "Normal")
            return answer
        current = self.blocks.get(block.index)
        if current is None:
            return OnlineResult(Outcome.GONE, errno=errno.ENOENT)
        if current.state is State.ONLINE:
            return OnlineResult(Outcome.ALREADY_ONLINE, zone=current.zone, errno=errno.EINVAL)
        zone_name = "Movable" if zone is ZoneRequest.MOVABLE else "Normal"
        self._set_online(block.index, zone_name)
        return OnlineResult(Outcome.ONLINED, zone=zone_name)

    def _set_online(self, index: int, zone: str) -> None:
        old = self.blocks.get(index)
        if old is not None:
            self.blocks[index] = Block(index, old.size, old.node, State.ONLINE, (zone,), self.domain)

    def online_indices(self) -> set[int]:
        return {i for i, b in self.blocks.items() if b.state is State.ONLINE}


class FakeBackend(Backend):
    """The Backend contract over a FakeHost; events come from ``inject`` (an event injector)."""

    def __init__(self, host: FakeHost | None = None, concurrency: int = 1, buffer: int = 100_000) -> None:
        self.host = host or FakeHost()
        self.concurrency = concurrency
        self._send: MemoryObjectSendStream[BlockEvent | Rescan]
        self._recv: MemoryObjectReceiveStream[BlockEvent | Rescan]
        self._send, self._recv = anyio.create_memory_object_stream(buffer)
        self.started = False
        self.stopped = False

    async def start(self) -> None:
        self.started = True

    async def stop(self) -> None:
        self.stopped = True

    async def scan(self) -> Scan:
        return Scan(list(self.host.blocks.values()), self.host.topology())

    async def topology(self) -> Topology:
        return self.host.topology()

    def events(self) -> AsyncIterator[BlockEvent | Rescan]:
        return self._events()

    async def _events(self) -> AsyncIterator[BlockEvent | Rescan]:
        async with self._recv:
            async for event in self._recv:
                yield event

    async def online(self, block: Block, zone: ZoneRequest) -> OnlineResult:
        return await self.host.online(block, zone)

    def census(self) -> Iterable[Block]:
        return list(self.host.blocks.values())

    # -- the event injector ------------------------------------------------------

    def inject(self, event: BlockEvent | Rescan) -> None:
        """Deliver one event to the daemon (applies add/remove to the host too)."""
        if isinstance(event, BlockEvent):
            if event.action is Action.ADD and event.index not in self.host.blocks:
                self.host.add(event.index, node=event.block.node if event.block else 0)
            if event.action is Action.REMOVE:
                self.host.blocks.pop(event.index, None)
            if event.action is Action.ADD and event.block is None:
                event = BlockEvent(Action.ADD, event.index, self.host.blocks[event.index], event.synthetic)
        self._send.send_nowait(event)

    def add(self, *indices: int, node: int = 0) -> None:
        """Hot-add blocks: put them on the host and inject their ``add`` events."""
        for index in indices:
            block = self.host.add(index, node=node)
            self._send.send_nowait(BlockEvent(Action.ADD, index, block))

    def remove(self, *indices: int) -> None:
        for index in indices:
            self.inject(BlockEvent(Action.REMOVE, index))

    def end(self) -> None:
        """End the event stream (the daemon's ``until_idle`` run can then finish)."""
        self._send.close()


def factory(backend: FakeBackend) -> Callable[[object], FakeBackend]:
    """A backend factory that hands out ``backend`` (for ``registry.add``)."""
    return lambda _options: backend
