"""The qga backend: the core's Backend contract over many guests, one domain per guest, from the hypervisor host.

The guests' tasks, scans, topology and onlining are the shared
:class:`~hotplugd_guestagent.fleet.GuestFleet`'s; what is qga's: the guests
come from ``[[plugins.qga.guest]]`` and ``guest_dirs`` (looked at again every
``discover_interval``), and each guest's task runs its poller beside the
listener of the daemon's own QMP monitor (:mod:`.watch`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import anyio
import structlog
from anyio.abc import ObjectSendStream

from hotplugd import BlockEvent, Rescan
from hotplugd_guestagent.fleet import GuestFleet

from .discover import find_guests
from .guest import GuestLink
from .qmp import Monitor, QmpError
from .settings import Settings, parse
from .watch import run_guest

log = structlog.get_logger("hotplugd.qga")


class QgaBackend(GuestFleet[GuestLink]):
    """Guests' memory blocks through their qemu-guest-agent; each guest is a domain named by the guest's name.

    ``concurrency`` and :meth:`domain_concurrency` are per guest (its kernel onlines
    one block at a time on mainline: 1); ``parallel_domains`` is ``parallel_guests``
    (0: every guest runs its phase at once). A phase's run of blocks goes to the
    guest in one ``guest-set-memory-blocks`` per ``max_batch`` (``batch_size``).
    """

    kind = "qga"
    member = "guest"
    settings: Settings

    def __init__(self, settings: Settings) -> None:
        super().__init__(settings, settings.parallel_guests)
        self.links.update((g.name, GuestLink(g, settings)) for g in settings.guests)
        self._configured = frozenset(self.links)  # [[plugins.qga.guest]]: never dropped
        self._monitors: dict[str, Monitor] = {}
        self._skipped: set[str] = set()  # guest directories already logged as skipped

    @classmethod
    def from_options(cls, options: Mapping[str, Any]) -> QgaBackend:
        """Build from the ``[plugins.qga]`` table (an invalid one raises ConfigError)."""
        return cls(parse(options))

    @property
    def guests(self) -> dict[str, GuestLink]:
        """The guests by name (the fleet's ``links``)."""
        return self.links

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
        await super().stop()
        for monitor in self._monitors.values():
            await monitor.aclose()
        self._monitors.clear()
        for guest in self.guests.values():
            await guest.client.close()

    async def run_link(self, link: GuestLink, send: ObjectSendStream[BlockEvent | Rescan]) -> None:
        """The guest's poller and (with a ``qmp`` socket) its listener, on the monitor :meth:`start` connected."""
        await run_guest(link, send, self._monitors.pop(link.name, None))

    # -- guests that come and go ------------------------------------------------------------

    @property
    def watches_guests(self) -> bool:
        return bool(self.settings.guest_dirs)

    async def rediscover(self) -> None:
        await self.discover()

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
                await self.drop(name)
        for name, settings in found.guests.items():
            if name not in self.guests:
                log.info("qga_guest_found", guest=name, qga=settings.qga, qmp=settings.qmp or None)
                self.adopt(GuestLink(settings, self.settings))

    async def release(self, link: GuestLink) -> None:
        monitor = self._monitors.pop(link.name, None)
        if monitor is not None:
            await monitor.aclose()
        await link.client.close()

    # -- hotplugd check ---------------------------------------------------------------------

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
