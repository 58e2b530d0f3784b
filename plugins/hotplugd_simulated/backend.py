"""The simulated backend: the core's Backend contract over a modelled host."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable, Mapping
from typing import Any

from hotplugd import Backend, Block, BlockEvent, OnlineResult, Rescan, Scan, Topology, ZoneRequest

from .host import Host
from .scenario import Scenario
from .settings import Settings, parse


class SimulatedBackend(Backend):
    """A modelled host with hot-add scenarios, per-block costs, a hotplug lock and injected faults."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.host = Host(settings)
        self.scenario = Scenario(settings, self.host)
        self.concurrency = settings.declared_concurrency

    @classmethod
    def from_options(cls, options: Mapping[str, Any]) -> SimulatedBackend:
        return cls(parse(options))

    @property
    def expected_blocks(self) -> int:
        """Blocks the scenario will add (for progress bars)."""
        return self.scenario.total_blocks

    def describe(self) -> str:
        s = self.settings
        return (f"simulated({s.nodes} nodes x {s.cpus_per_node} CPUs, lock={s.lock}, "
                f"concurrency={self.concurrency}, {s.block_size >> 20} MiB blocks)")

    async def scan(self) -> Scan:
        return Scan(list(self.census()), await self.topology())

    async def topology(self) -> Topology:
        s = self.settings
        return Topology({n: s.cpus_per_node for n in range(s.nodes)}, self.host.mem_available, s.block_size)

    async def events(self) -> AsyncIterator[BlockEvent | Rescan]:
        async for event in self.scenario.events():
            yield event

    async def online(self, block: Block, zone: ZoneRequest) -> OnlineResult:
        return await self.host.online(block.index, zone)

    def census(self) -> Iterable[Block]:
        size = self.settings.block_size
        return [b.view(size) for b in list(self.host.blocks.values())]
