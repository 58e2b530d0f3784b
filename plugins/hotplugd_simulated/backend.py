"""The simulated backend: the core's Backend contract over a modelled host."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from typing import Any

import anyio

from hotplugd import (
    HOST_DOMAIN,
    Backend,
    BackendError,
    Block,
    BlockEvent,
    KernelKnobs,
    OnlineResult,
    Rescan,
    Scan,
    Topology,
    ZoneRequest,
)

from .host import Host
from .kernels import KERNELS
from .predict import Prediction, predict, spread
from .scenario import Scenario
from .settings import Settings, parse
from .statefile import StateFile, fingerprint


class SimulatedBackend(Backend):
    """A modelled host with hot-add scenarios, per-block costs, a hotplug lock and injected faults."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        journal = None
        if settings.state_file:
            key = fingerprint(settings.nodes, settings.block_size, settings.boot_memory, settings.offline_at_start,
                              settings.scenario)
            journal = StateFile(settings.state_file, key, settings.block_size)
        self.host = Host(settings, journal)
        self.scenario = Scenario(settings, self.host)
        self.concurrency = settings.declared_concurrency
        #: Set by the first scan: a daemon's hot-add starts once it watches the host (its plan applied).
        self._watched: anyio.Event | None = None

    @classmethod
    def from_options(cls, options: Mapping[str, Any]) -> SimulatedBackend:
        return cls(parse(options))

    @property
    def expected_blocks(self) -> int:
        """Blocks the scenario will add (for progress bars)."""
        return self.scenario.total_blocks

    def compare(self, ratio: float) -> list[Prediction]:
        """This scenario computed on every kernel, serially (ratio 0) and at ``ratio``."""
        steps = self.settings.scenario
        return [predict(self.settings, steps, kernel, r) for kernel in KERNELS for r in sorted({0.0, ratio})]

    def whatif(self, size: int, cpus: Sequence[int], ratios: Sequence[float]) -> list[Prediction]:
        """A hot-add of ``size`` spread over this host's nodes (``cpus`` each), on every kernel and ratio;
        the seed's kernel also with virtio-mem's 1 GiB threshold kept."""
        steps = spread(size - size % (self.settings.block_size * len(cpus)), len(cpus))
        variants = (("mainline", False), ("per-block", False), ("anolis", False), ("anolis", True))
        return [predict(self.settings, steps, kernel, r, bound=bound, cpus=cpus)
                for kernel, bound in variants for r in ratios]

    def describe(self) -> str:
        s = self.settings
        return (f"simulated({s.kernel} kernel, auto_online_blocks={self.host.knobs.values['auto_online_blocks']}, "
                f"{s.nodes} nodes x {s.cpus_per_node} CPUs, lock={s.lock_model}, "
                f"concurrency={self.concurrency}, {s.block_size >> 20} MiB blocks)")

    async def start(self) -> None:
        """Restore the host from ``state_file`` when set (and compact the file). Started by a daemon, the
        scenario waits for its first scan: the hot-add meets the plan the daemon applies first."""
        self._watched = anyio.Event()
        await anyio.to_thread.run_sync(self.host.restore)

    async def stop(self) -> None:
        if self.host.journal is not None:
            self.host.journal.close()

    async def scan(self) -> Scan:
        scan = Scan(list(self.census()), await self.topology())
        if self._watched is not None:
            self._watched.set()
        return scan

    async def topology(self) -> Topology:
        s = self.settings
        return Topology({n: s.cpus_per_node for n in range(s.nodes)}, self.host.mem_available, s.block_size,
                        kernel_onlines=self.host.knobs.kernel_onlines)

    async def kernel_knobs(self, domain: str = HOST_DOMAIN) -> KernelKnobs | None:
        """The simulated kernel's knobs, as the plan reads a real one's (:mod:`.knobs`)."""
        return self.host.knobs.read() if domain == HOST_DOMAIN else None

    async def set_kernel_knobs(self, values: Mapping[str, str], domain: str = HOST_DOMAIN) -> None:
        if domain != HOST_DOMAIN:
            raise BackendError(f"the simulated backend has only the {HOST_DOMAIN!r} domain, not {domain!r}")
        self.host.knobs.write(values)

    async def verify(self, blocks: Sequence[Block]) -> list[Block | None]:
        """Just these blocks, as the host has them now."""
        size = self.settings.block_size
        found = [self.host.blocks.get(b.index) for b in blocks]
        return [b.view(size) if b is not None else None for b in found]

    async def events(self) -> AsyncIterator[BlockEvent | Rescan]:
        if self._watched is not None:
            await self._watched.wait()
        async for event in self.scenario.events():
            yield event

    async def online(self, block: Block, zone: ZoneRequest) -> OnlineResult:
        return await self.host.online(block.index, zone)

    def census(self) -> Iterable[Block]:
        size = self.settings.block_size
        return [b.view(size) for b in list(self.host.blocks.values())]
