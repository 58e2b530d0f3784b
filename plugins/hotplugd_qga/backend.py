"""The qga backend: the core's Backend contract over many guests, from the hypervisor host."""

from __future__ import annotations

from collections import Counter
from collections.abc import AsyncIterator, Iterable, Mapping
from typing import Any

import anyio
import structlog

from hotplugd import Backend, Block, BlockEvent, OnlineResult, Outcome, Rescan, Scan, Topology, ZoneRequest

from .blocks import DEFAULT_BLOCK_SIZE, split_index
from .guest import GuestLink
from .qmp import LINK_ERRORS, Monitor, QmpError
from .settings import Settings, parse
from .watch import listen_guest, poll_guest

log = structlog.get_logger("hotplugd.qga")

#: Events buffered between the guests' pollers and the daemon's intake.
EVENT_BUFFER = 4096


class QgaBackend(Backend):
    """Guests' memory blocks through their qemu-guest-agent; one guest is one node of the core's model.

    Each guest counts as a node with one CPU (its agent runs one command at a
    time) and the declared concurrency is the number of guests: with
    ``parallel_hotplug_ratio = 1`` the final phase runs one worker per guest,
    all guests at once.
    """

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.guests = [GuestLink(number, g, settings) for number, g in enumerate(settings.guests)]
        self.concurrency = settings.declared_concurrency
        self._monitors: dict[int, Monitor] = {}
        self._zone_warned = False

    @classmethod
    def from_options(cls, options: Mapping[str, Any]) -> QgaBackend:
        """Build from the ``[plugins.qga]`` table (an invalid one raises ConfigError)."""
        return cls(parse(options))

    def __repr__(self) -> str:
        return f"<QgaBackend guests={[g.name for g in self.guests]} concurrency={self.concurrency}>"

    def describe(self) -> str:
        names = ", ".join(f"{g.number}={g.name}" for g in self.guests)
        return f"qga({len(self.guests)} guests: {names}; concurrency={self.concurrency})"

    # -- life cycle -----------------------------------------------------------------------

    async def start(self) -> None:
        """Connect each guest's QMP monitor first, so no memory event is missed after the scan."""
        async with anyio.create_task_group() as tg:
            for guest in self.guests:
                if guest.settings.qmp:
                    tg.start_soon(self._connect_monitor, guest)

    async def _connect_monitor(self, guest: GuestLink) -> None:
        try:
            self._monitors[guest.number] = await Monitor.connect(guest.settings.qmp, self.settings.timeout)
        except (*LINK_ERRORS, TimeoutError, QmpError) as exc:  # the listener keeps trying
            log.warning("qmp_monitor_unavailable", guest=guest.name, path=guest.settings.qmp, error=str(exc))

    async def stop(self) -> None:
        for monitor in self._monitors.values():
            await monitor.aclose()
        self._monitors.clear()
        for guest in self.guests:
            await guest.client.close()

    # -- reading the guests -----------------------------------------------------------------

    async def scan(self) -> Scan:
        found: dict[int, list[Block]] = {}

        async def one(guest: GuestLink) -> None:
            found[guest.number] = await guest.scan()

        async with anyio.create_task_group() as tg:
            for guest in self.guests:
                tg.start_soon(one, guest)
        blocks = [b for g in self.guests for b in found.get(g.number, [])]
        return Scan(blocks, await self.topology())

    async def topology(self) -> Topology:
        """From what the pollers last read: no agent round trip on the scheduler's path."""
        sizes = Counter(g.block_size for g in self.guests if g.block_size)
        return Topology(
            cpus_per_node={g.number: 1 for g in self.guests},  # one agent command at a time per guest
            mem_available=sum(g.mem_available or 0 for g in self.guests),
            block_size=sizes.most_common(1)[0][0] if sizes else DEFAULT_BLOCK_SIZE,
        )

    def census(self) -> Iterable[Block] | None:
        if all(g.snapshot is None for g in self.guests):
            return None
        return [b for g in self.guests for b in g.blocks()]

    async def conflicts(self) -> list[str]:
        """Guests whose own kernel onlines hot-added memory (``auto_online_blocks`` not ``offline``)."""
        messages: list[str] = []

        async def one(guest: GuestLink) -> None:
            policy = await guest.read_auto_online()
            if policy and policy != "offline":
                messages.append(f"guest {guest.name}: its kernel onlines hot-added memory itself "
                                f"(auto_online_blocks={policy}); boot it with memhp_default_state=offline")

        async with anyio.create_task_group() as tg:
            for guest in self.guests:
                tg.start_soon(one, guest)
        return sorted(messages)

    # -- events ---------------------------------------------------------------------------

    def events(self) -> AsyncIterator[BlockEvent | Rescan]:
        return self._events()

    async def _events(self) -> AsyncIterator[BlockEvent | Rescan]:
        send, receive = anyio.create_memory_object_stream[BlockEvent | Rescan](EVENT_BUFFER)
        async with anyio.create_task_group() as tg:
            for guest in self.guests:
                tg.start_soon(poll_guest, guest, send.clone())
                if guest.settings.qmp:
                    tg.start_soon(listen_guest, guest, self._monitors.pop(guest.number, None))
            send.close()
            async with receive:
                async for event in receive:
                    yield event

    # -- onlining -------------------------------------------------------------------------

    async def online(self, block: Block, zone: ZoneRequest) -> OnlineResult:
        number, phys = split_index(block.index)
        if number >= len(self.guests):
            return OnlineResult(Outcome.GONE, detail=f"no guest number {number}")
        if zone is not ZoneRequest.AUTO and not self._zone_warned:
            self._zone_warned = True
            log.warning("qga_zone_ignored", requested=zone.value,
                        detail="the agent writes `online`: each guest's kernel picks the zone")
        return await self.guests[number].online(phys)
