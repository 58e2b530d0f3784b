"""The qga backend: the core's Backend contract over many guests, one domain per guest, from the hypervisor host."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from typing import Any

import anyio
import structlog
from anyio.abc import ObjectSendStream, TaskGroup

from hotplugd import Backend, Block, BlockEvent, OnlineResult, Rescan, Scan, Topology, ZoneRequest
from hotplugd_guestagent.blocks import removals
from hotplugd_guestagent.fleet import census_of, online_by_guest, scan_all, topology_of

from .discover import find_guests
from .guest import GuestLink
from .qmp import Monitor, QmpError
from .settings import Settings, parse
from .watch import run_guest

log = structlog.get_logger("hotplugd.qga")

#: Events buffered between the guests' pollers and the daemon's intake.
EVENT_BUFFER = 4096


class QgaBackend(Backend):
    """Guests' memory blocks through their qemu-guest-agent; each guest is a domain named by the guest's name.

    ``concurrency`` and :meth:`domain_concurrency` are per guest (its kernel onlines
    one block at a time on mainline: 1); ``parallel_domains`` is ``parallel_guests``
    (0: every guest runs its phase at once). A phase's run of blocks goes to the
    guest in one ``guest-set-memory-blocks`` per ``max_batch`` (``batch_size``).
    """

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.concurrency = settings.concurrency
        self.parallel_domains = settings.parallel_guests
        self.batch_size = settings.max_batch
        self.guests: dict[str, GuestLink] = {g.name: GuestLink(g, settings) for g in settings.guests}
        self._configured = frozenset(self.guests)  # [[plugins.qga.guest]]: never dropped
        self._monitors: dict[str, Monitor] = {}
        self._scopes: dict[str, anyio.CancelScope] = {}
        self._tasks: TaskGroup | None = None
        self._send: ObjectSendStream[BlockEvent | Rescan] | None = None
        self._skipped: set[str] = set()  # guest directories already logged as skipped
        self._zone_warned = False

    @classmethod
    def from_options(cls, options: Mapping[str, Any]) -> QgaBackend:
        """Build from the ``[plugins.qga]`` table (an invalid one raises ConfigError)."""
        return cls(parse(options))

    def __repr__(self) -> str:
        return f"<QgaBackend guests={list(self.guests)} concurrency={self.concurrency}>"

    def describe(self) -> str:
        dirs = "".join(f"; guests in {d.glob}" for d in self.settings.guest_dirs)
        parallel = self.parallel_domains or "all"
        return (f"qga({len(self.guests)} guests: {', '.join(self.guests) or '-'}{dirs}; "
                f"concurrency per guest={self.concurrency}; guests at once={parallel})")

    def domain_concurrency(self, domain: str) -> int:
        guest = self.guests.get(domain)
        return self.settings.concurrency_of(guest.settings if guest is not None else None)

    # -- life cycle -----------------------------------------------------------------------

    async def start(self) -> None:
        """Find the guests, then connect each QMP monitor, so no memory event is missed after the scan."""
        await self.discover()
        async with anyio.create_task_group() as tg:
            for guest in self.guests.values():
                if guest.settings.qmp:
                    tg.start_soon(self._connect_monitor, guest)

    async def _connect_monitor(self, guest: GuestLink) -> None:
        try:
            self._monitors[guest.name] = await Monitor.connect(guest.settings.qmp, self.settings.timeout, guest.name)
        except QmpError as exc:  # the listener keeps trying
            log.warning("qmp_monitor_unavailable", guest=guest.name, path=guest.settings.qmp, error=str(exc))

    async def stop(self) -> None:
        for scope in self._scopes.values():
            scope.cancel()
        for monitor in self._monitors.values():
            await monitor.aclose()
        self._monitors.clear()
        for guest in self.guests.values():
            await guest.client.close()

    # -- guests that come and go ------------------------------------------------------------

    async def discover(self) -> None:
        """Look at ``guest_dirs`` again: pick up the guests that appeared, drop those that went away."""
        if not self.settings.guest_dirs:
            return
        found = await anyio.to_thread.run_sync(find_guests, self.settings.guest_dirs, self._configured)
        for directory in found.skipped.keys() - self._skipped:
            log.warning("qga_guest_dir_skipped", directory=directory, reason=found.skipped[directory])
        self._skipped = set(found.skipped)
        for name, guest in list(self.guests.items()):
            if name not in self._configured and found.guests.get(name) != guest.settings:
                await self._drop(name)
        for name, settings in found.guests.items():
            if name not in self.guests:
                guest = self.guests[name] = GuestLink(settings, self.settings)
                log.info("qga_guest_found", guest=name, qga=settings.qga, qmp=settings.qmp or None)
                if self._tasks is not None:
                    guest.wake()  # appeared at run time: list its blocks at once (they arrive as adds)
                    self._launch(guest)

    async def _drop(self, name: str) -> None:
        """Stop watching a guest that went away; its blocks are removed, and a rescan drops its domain."""
        guest = self.guests.pop(name)
        scope = self._scopes.pop(name, None)
        if scope is not None:
            scope.cancel()
        monitor = self._monitors.pop(name, None)
        if monitor is not None:
            await monitor.aclose()
        await guest.client.close()
        log.info("qga_guest_gone", guest=name)
        if self._send is not None:
            for event in removals(name, guest.snapshot):
                await self._send.send(event)
            await self._send.send(Rescan("guest_gone"))

    async def _discover_forever(self) -> None:
        while True:
            await anyio.sleep(self.settings.discover_interval)
            await self.discover()

    # -- reading the guests -----------------------------------------------------------------

    async def scan(self) -> Scan:
        return Scan(await scan_all(self.guests.values()), await self.topology())

    async def topology(self) -> Topology:
        """Each guest's own topology (``domains``), from what the pollers last read: no agent round trip."""
        return topology_of(self.guests.values())

    async def domain_topology(self, domain: str) -> Topology:
        """One guest's topology alone: each guest's domain refreshes its own, not all of them."""
        guest = self.guests.get(domain)
        return guest.topology() if guest is not None else (await self.topology()).for_domain(domain)

    def census(self) -> Iterable[Block] | None:
        return census_of(self.guests.values())

    async def conflicts(self) -> list[str]:
        """Guests whose own kernel onlines hot-added memory (``auto_online_blocks`` not ``offline``)."""
        await self.discover()
        messages: list[str] = []

        async def one(guest: GuestLink) -> None:
            policy = await guest.read_auto_online()
            if policy and policy != "offline":
                messages.append(f"guest {guest.name}: its kernel onlines hot-added memory itself "
                                f"(auto_online_blocks={policy}); boot it with memhp_default_state=offline")

        async with anyio.create_task_group() as tg:
            for guest in list(self.guests.values()):
                tg.start_soon(one, guest)
        return sorted(messages)

    async def unknowns(self) -> list[str]:
        """Guests whose kernel's ``auto_online_blocks`` could not be read (after :meth:`conflicts`), and
        no guest at all: ``hotplugd check`` cannot vouch for guests it could not see."""
        if not self.guests:
            return ["no guest configured or found ([[plugins.qga.guest]], [[plugins.qga.guest_dirs]]): "
                    "nothing to check"]
        return sorted(f"guest {guest.name}: its agent does not answer ({guest.down_reason or 'no reply'}): "
                      "cannot tell whether its kernel onlines hot-added memory itself"
                      for guest in self.guests.values() if guest.auto_online is None)

    # -- events ---------------------------------------------------------------------------

    def events(self) -> AsyncIterator[BlockEvent | Rescan]:
        return self._events()

    async def _events(self) -> AsyncIterator[BlockEvent | Rescan]:
        send, receive = anyio.create_memory_object_stream[BlockEvent | Rescan](EVENT_BUFFER)
        async with anyio.create_task_group() as tg:
            self._tasks, self._send = tg, send
            try:
                for guest in list(self.guests.values()):
                    self._launch(guest)
                if self.settings.guest_dirs:
                    tg.start_soon(self._discover_forever)
                async with receive:
                    async for event in receive:
                        yield event
            finally:
                self._tasks, self._send = None, None
                send.close()
                tg.cancel_scope.cancel()

    def _launch(self, guest: GuestLink) -> None:
        """Start the guest's poller and listener, in a scope of their own (cancelled when it goes away)."""
        assert self._tasks is not None and self._send is not None
        scope = self._scopes[guest.name] = anyio.CancelScope()
        self._tasks.start_soon(self._run_guest, guest, scope, self._send.clone())

    async def _run_guest(self, guest: GuestLink, scope: anyio.CancelScope,
                         send: ObjectSendStream[BlockEvent | Rescan]) -> None:
        with scope:
            try:
                await run_guest(guest, send, self._monitors.pop(guest.name, None))
            finally:
                send.close()

    # -- onlining -------------------------------------------------------------------------

    def _check_zone(self, zone: ZoneRequest) -> None:
        if zone is not ZoneRequest.AUTO and not self._zone_warned:
            self._zone_warned = True
            log.warning("qga_zone_ignored", requested=zone.value,
                        detail="the agent writes `online`: each guest's kernel picks the zone")

    async def online(self, block: Block, zone: ZoneRequest) -> OnlineResult:
        return (await self.online_many([(block, zone)]))[0]

    async def online_many(self, items: Sequence[tuple[Block, ZoneRequest]]) -> list[OnlineResult]:
        """A run of blocks: one ``guest-set-memory-blocks`` per guest (and per ``max_batch`` blocks)."""
        return await online_by_guest(self.guests, items, self._check_zone)
