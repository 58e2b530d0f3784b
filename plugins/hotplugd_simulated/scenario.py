"""Hot-plug scenarios: the events a hypervisor's hot-add would make the kernel raise."""

from __future__ import annotations

from collections.abc import AsyncIterator

import anyio
import anyio.lowlevel

from hotplugd import Action, BlockEvent, State

from .host import CHECKPOINT_EVERY, Host
from .settings import Settings, Step

#: virtio-mem stops plugging while this many of its bytes wait offline (Linux's driver).
VIRTIO_MEM_OFFLINE_LIMIT = 1 << 30


class Scenario:
    """Plays the settings' steps against a host, in order, each no earlier than its ``at``."""

    def __init__(self, settings: Settings, host: Host) -> None:
        self.s = settings
        self.host = host
        self.added = 0
        self.removed = 0

    @property
    def total_blocks(self) -> int:
        """Blocks the scenario adds in all (for progress bars)."""
        return sum(step.size // self.s.block_size for step in self.s.scenario if step.kind != "remove")

    async def events(self) -> AsyncIterator[BlockEvent]:
        """Play every step; a host restored from a state file skips what was played before."""
        start = anyio.current_time()
        resumed = self.host.resumed
        for number, step in enumerate(self.s.scenario):
            if number in resumed.done:
                continue
            delay = start + step.at - anyio.current_time()
            if delay > 0:
                await anyio.sleep(delay)
            play = {"dimm": self._dimm, "virtio-mem": self._virtio_mem, "remove": self._remove}[step.kind]
            async for event in play(step, number, resumed.progress[number]):
                yield event
            self.host.finished(number)

    @property
    def kernel_defers(self) -> bool:
        """The seed's kernel with its ratio set and auto-online on: its driver runs the final phase."""
        knobs = self.host.knobs
        return self.s.kernel == "anolis" and knobs.ratio > 0 and knobs.kernel_onlines

    async def _add(self, node: int, number: int) -> BlockEvent:
        block = self.host.plug(node, number)
        self.added += 1
        if self.host.knobs.kernel_onlines:  # the kernel onlines (or PREPAREs) before the uevent reaches anyone
            await self.host.kernel_online(block)
        if self.s.add_interval:  # timer overshoot compensated, as for the kernel's own costs
            await self.host.spend(self.s.add_interval)
        elif self.added % CHECKPOINT_EVERY == 0:
            await anyio.lowlevel.checkpoint()
        return BlockEvent(Action.ADD, block.index, block.view(self.s.block_size))

    async def _dimm(self, step: Step, number: int, done: int) -> AsyncIterator[BlockEvent]:
        """A DIMM: every block added in one burst (``done`` were added before a restart).

        On anolis the DIMM then gets the final phase like virtio-mem's requests (an assumption:
        the ACPI driver's source was not available, ANOLIS.md)."""
        first = self.host.next_index
        for _ in range(step.size // self.s.block_size - done):
            yield await self._add(step.node, number)
        if self.kernel_defers:
            await self.host.deferred_online_memory(step.node, range(first, self.host.next_index))

    async def _virtio_mem(self, step: Step, number: int, done: int) -> AsyncIterator[BlockEvent]:
        """virtio-mem: plugs block by block, but waits while 1 GiB of its blocks sits offline.

        The seed's kernel skips that wait while its ratio is set, adds the whole request, then
        runs ``deferred_online_memory`` over it."""
        first = self.host.next_index - done  # a step's blocks are the newest ones
        for _ in range(step.size // self.s.block_size - done):
            mine = range(first, self.host.next_index)
            while not self.kernel_defers and self.host.offline_bytes(mine) >= VIRTIO_MEM_OFFLINE_LIMIT:
                await self.host.wait_for_change()
            yield await self._add(step.node, number)
        if self.kernel_defers:
            await self.host.deferred_online_memory(step.node, range(first, self.host.next_index))

    async def _remove(self, step: Step, number: int, done: int) -> AsyncIterator[BlockEvent]:
        """Unplug the newest ``count`` offline blocks (e.g. virtio-mem shrinking during deferral)."""
        left = step.count - done
        victims = [b.index for b in reversed(self.host.blocks.values()) if b.state is State.OFFLINE][:left]
        for index in victims:  # an offline block is removed with a lone `remove` uevent
            self.host.unplug(index, number)
            self.removed += 1
            yield BlockEvent(Action.REMOVE, index)
