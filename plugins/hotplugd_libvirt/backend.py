"""The libvirt backend: the core's Backend contract over libvirt's domains, one hotplugd domain per guest.

Every libvirt call blocks, so each runs in a worker thread (a limiter bounds
them: ``max_threads``); libvirt's callbacks arrive on its event thread and are
posted to the loop (:meth:`LibvirtBackend._sink`) into a bounded inbox, which
one task of the backend's task group reads. A full inbox is not an error:
the events are dropped and the domain list and every guest are read again.

Tasks in the backend's task group (the shared
:class:`~hotplugd_guestagent.fleet.GuestFleet`'s :meth:`events`): one poller
per selected domain, the inbox reader, the connection keeper (reconnect with
backoff after libvirtd went away; every domain read again then) and the
fleet's watch, which reconciles (the domain list read again on lifecycle and
metadata events, and every ``discover_interval``). Scans, topology and
onlining are the fleet's too.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import anyio
import structlog

from hotplugd_guestagent.fleet import GuestFleet, scan_all
from hotplugd_guestagent.link import AgentLink, backoff

from . import report
from .dimms import is_dimm_added, is_memory_alias, start_learning
from .hypervisor import (
    AgentNotConnected,
    AgentState,
    Closed,
    Connection,
    ConnectionLost,
    DomainInfo,
    Hypervisor,
    HypervisorError,
    HypervisorEvent,
    Lifecycle,
    MemoryChanged,
    MetadataChanged,
)
from .settings import Settings
from .transport import LibvirtAgent

log = structlog.get_logger("hotplugd.libvirt")

#: libvirt events buffered between libvirt's thread and the inbox reader (more: dropped, all read again).
INBOX = 1024


class LibvirtBackend(GuestFleet[AgentLink]):
    """Selected running domains of one libvirt URI; each is a domain of the core, named by the domain's name."""

    kind = "libvirt"
    member = "domain"
    settings: Settings

    def __init__(self, settings: Settings, hypervisor: Hypervisor) -> None:
        super().__init__(settings, settings.parallel_domains)
        self.hypervisor = hypervisor
        self.ids: dict[str, str] = {}  # domain name -> its identity when selected (a restarted domain is new)
        self.unselected: list[str] = []  # running domains the config does not select (never touched)
        self.conn: Connection | None = None
        self.connect_error: str | None = None
        self.failures = 0  # connection attempts failed in a row
        self.reconnects = 0
        self.dropped_events = 0
        self._limiter = anyio.CapacityLimiter(settings.max_threads)
        self._inbox, self._inbox_out = anyio.create_memory_object_stream[HypervisorEvent](INBOX)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._lost: anyio.Event | None = None  # made on the loop (anyio's events need one)
        self._connected: anyio.Event | None = None  # set while connected
        self._agent_connected: dict[str, anyio.Event] = {}  # requests waiting for AGENT_LIFECYCLE connected
        self._device_sizes: dict[tuple[str, str], int] = {}  # virtio-mem sizes last told (domain, alias)
        self._learning: set[tuple[str, str]] = set()  # DIMMs whose blocks are being learned (domain, alias)
        self._revisit_all = False

    def __repr__(self) -> str:
        state = "CONNECTED" if self.conn is not None else "DISCONNECTED"
        return f"<LibvirtBackend {self.settings.uri} [{state}] domains={list(self.links)}>"

    def describe(self) -> str:
        parallel = self.parallel_domains or "all"
        return (f"libvirt({self.settings.uri}: {len(self.links)} domains: {', '.join(self.links) or '-'}; "
                f"concurrency per domain={self.concurrency}; domains at once={parallel})")

    def dropped_counts(self) -> dict[str, int]:
        return {"libvirt_inbox_full": self.dropped_events} if self.dropped_events else {}

    # -- libvirt calls, in worker threads ------------------------------------------------------

    async def _thread(self, fn: Any, *args: Any) -> Any:
        return await anyio.to_thread.run_sync(fn, *args, limiter=self._limiter, abandon_on_cancel=True)

    async def _agent_call(self, domain: str, command: str, seconds: int) -> str:
        """``qemuAgentCommand`` on the current connection. A connection that is down (libvirtd restarting: about
        a second) is waited for, and a call it failed is sent again on the next one, within ``seconds``; so is
        an agent libvirt is not connected to yet (AGENT_LIFECYCLE connected ends the wait). The agent's
        commands are idempotent (an online block answers ``success``), and a restart of libvirtd is not the
        guest's failure: its blocks would be given up for nothing, or a listing would find the blocks the lost
        request onlined and count them as another onliner's."""
        deadline = anyio.current_time() + seconds
        while True:
            conn = self.conn
            if conn is None:
                with anyio.move_on_after(max(0.0, deadline - anyio.current_time())):
                    await self._connected_event().wait()
                conn = self.conn
            if conn is None:
                raise ConnectionLost(f"not connected to {self.settings.uri}" +
                                     (f" ({self.connect_error})" if self.connect_error else ""))
            try:
                return str(await self._thread(conn.agent_command, domain, command, seconds))
            except ConnectionLost as exc:
                self._connection_lost(conn, str(exc))
                if anyio.current_time() >= deadline:
                    raise
            except AgentNotConnected:  # e.g. a libvirtd that just restarted: wait for AGENT_LIFECYCLE connected
                connected = self._agent_connected.setdefault(domain, anyio.Event())
                with anyio.move_on_after(max(0.0, deadline - anyio.current_time())):
                    await connected.wait()
                if not connected.is_set():
                    raise

    def _connected_event(self) -> anyio.Event:
        if self._connected is None or (self.conn is None and self._connected.is_set()):
            self._connected = anyio.Event()
        return self._connected

    def _sink(self, event: HypervisorEvent) -> None:
        """libvirt's thread (or the loop's): hand ``event`` to the loop, never blocking."""
        loop = self._loop
        if loop is not None:
            with contextlib.suppress(RuntimeError):  # the loop closed: the daemon is stopping
                loop.call_soon_threadsafe(self._post, event)

    def _post(self, event: HypervisorEvent) -> None:
        try:
            self._inbox.send_nowait(event)
        except anyio.WouldBlock:  # a storm: read everything again once it is over
            self.dropped_events += 1
            self._revisit_all = True
            self.want_rediscover()
        except (anyio.BrokenResourceError, anyio.ClosedResourceError):
            pass

    # -- the connection -----------------------------------------------------------------------

    async def _connect(self) -> bool:
        """One attempt to connect, subscribe and read the domains; False (logged) when libvirtd is not there."""
        self._loop = asyncio.get_running_loop()
        try:
            conn = await self._thread(self.hypervisor.open, self.settings.uri, self._sink)
        except (ConnectionLost, HypervisorError) as exc:
            if self.failures == 0:
                log.warning("libvirt_unreachable", uri=self.settings.uri, error=str(exc))
            self.failures += 1
            self.connect_error = str(exc)
            return False
        if self.failures or self.reconnects:
            log.info("libvirt_reconnected", uri=self.settings.uri, failures=self.failures)
        else:
            log.info("libvirt_connected", uri=self.settings.uri)
        self.conn, self.failures, self.connect_error = conn, 0, None
        self.reconnects += 1
        self._connected_event().set()
        await self.reconcile(revisit=True)
        return True

    def _connection_lost(self, conn: Connection | None, why: str) -> None:
        if conn is None or conn is not self.conn:
            return
        log.warning("libvirt_connection_lost", uri=self.settings.uri, error=why)
        self.conn, self.connect_error = None, why
        if self._lost is not None:
            self._lost.set()
        if self._tasks is not None:
            self._tasks.start_soon(self._close, conn)

    async def _close(self, conn: Connection) -> None:
        with anyio.CancelScope(shield=True), contextlib.suppress(Exception):
            await self._thread(conn.close)

    def backoff(self) -> float:
        return backoff(self.settings, self.failures)

    async def _keep_connected(self) -> None:
        """Forever: reconnect (with backoff) whenever the connection is gone."""
        while True:
            lost = self._lost = anyio.Event()
            if self.conn is None and not await self._connect():
                await anyio.sleep(self.backoff())
                continue
            if self.conn is not None:
                await lost.wait()

    # -- which domains --------------------------------------------------------------------------

    async def reconcile(self, revisit: bool = False) -> None:
        """Read the running domains again: manage the newly selected, drop those gone (stopped, migrated away,
        deselected), and with ``revisit`` list every managed guest again (the connection came back)."""
        conn = self.conn
        if conn is None:
            return
        try:
            running: list[DomainInfo] = await self._thread(conn.running_domains, self.settings.metadata)
        except ConnectionLost as exc:
            self._connection_lost(conn, str(exc))
            return
        except HypervisorError as exc:
            log.warning("libvirt_list_failed", uri=self.settings.uri, error=str(exc))
            return
        selected = {d.name: d for d in running if self.settings.selects(d.name, d.metadata)}
        self.unselected = sorted(d.name for d in running if d.name not in selected)
        for name in list(self.links):
            info = selected.get(name)
            if info is None or info.identity != self.ids.get(name):
                await self.drop(name, reason="stopped" if info is None else "replaced")
        for name, info in selected.items():
            link = self.links.get(name)
            if link is None:
                self._add(info)
            elif revisit:
                link.revisit()

    def _add(self, info: DomainInfo) -> None:
        agent = LibvirtAgent(info.name, self._agent_call, self.settings.timeout)
        self.ids[info.name] = info.identity
        log.info("libvirt_domain_managed", domain=info.name, uuid=info.uuid)
        self.adopt(AgentLink(info.name, self.settings, agent, kind="libvirt"))  # listed at once (coldplug)

    async def release(self, link: AgentLink) -> None:
        self.ids.pop(link.name, None)

    async def rediscover(self) -> None:
        """The fleet's watch: on lifecycle and metadata events (coalesced) and every ``discover_interval``."""
        revisit, self._revisit_all = self._revisit_all, False
        await self.reconcile(revisit=revisit)

    # -- libvirt's events ------------------------------------------------------------------------

    async def _read_inbox(self) -> None:
        async for event in self._inbox_out:
            self.handle(event)

    def handle(self, event: HypervisorEvent) -> None:
        """One libvirt event: agent up or down, memory added, a domain's life cycle, the connection closed."""
        if isinstance(event, Closed):
            self._connection_lost(self.conn, f"libvirt closed the connection (reason {event.reason})")
        elif isinstance(event, Lifecycle | MetadataChanged):
            self.want_rediscover()  # coalesced: one listing for a burst of events
        elif (link := self.links.get(event.domain)) is None:
            return  # a domain not managed: never touched
        elif isinstance(event, AgentState):
            if event.connected and (waiting := self._agent_connected.pop(event.domain, None)) is not None:
                waiting.set()  # the request waiting for it goes first, then the listing
            link.agent_changed(event.connected)  # connected: its blocks are listed at once (coldplug)
        elif isinstance(event, MemoryChanged):
            # poll fast until adding is over (QEMU: one size event a second at most); a memory device added,
            # or a virtio-mem device grown, brings blocks the guest creates later: poll fast until they come
            key = (event.domain, event.alias)
            grown = event.size is not None and event.size > self._device_sizes.get(key, 0)
            if event.size is not None:
                self._device_sizes[key] = event.size
            added = event.size is None and is_memory_alias(event.alias)
            if added and is_dimm_added(event.alias) and self._learn_dimm(link, event.alias):
                return  # its blocks are announced once the guest created them (dimms.py)
            link.memory_event(self.settings.add_wait if added or grown else 0.0)

    def _learn_dimm(self, link: AgentLink, alias: str) -> bool:
        """Start learning a DIMM's blocks from the domain's XML (a task of its own); False when it cannot."""
        if self._tasks is None or self._send is None:
            return False
        return start_learning(self._tasks, self._send, self._learning, link, alias,
                              lambda: self._domain_xml(link.name), self.settings.add_wait)

    async def _domain_xml(self, domain: str) -> str:
        conn = self.conn
        if conn is None:
            raise ConnectionLost(f"not connected to {self.settings.uri}")
        try:
            return str(await self._thread(conn.domain_xml, domain))
        except ConnectionLost as exc:
            self._connection_lost(conn, str(exc))
            raise

    # -- life cycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        """Connect and read the domains, so the coldplug scan sees them; libvirtd not there is not fatal."""
        if self.conn is None:
            await self._connect()

    async def stop(self) -> None:
        await super().stop()
        conn, self.conn = self.conn, None
        if conn is not None:
            await self._close(conn)

    def background(self) -> Sequence[Callable[[], Awaitable[None]]]:
        """Beside the domains' pollers and the fleet's watch: the inbox reader and the connection keeper."""
        return (self._read_inbox, self._keep_connected)

    # -- hotplugd check ---------------------------------------------------------------------------

    async def conflicts(self) -> list[str]:
        """libvirtd unreachable, an agent that does not answer, a guest whose kernel onlines by itself."""
        if self.conn is None:
            await self._connect()
        if self.conn is None:
            return [f"libvirt {self.settings.uri}: cannot connect: {self.connect_error}"]
        await scan_all(self.links.values())  # each agent asked once (its description and blocks)
        return report.conflicts(self.links)

    async def inventory(self) -> list[str]:
        """The domains this backend would manage, their agents and the plan for each (after :meth:`conflicts`)."""
        if self.conn is None:
            return [f"libvirt {self.settings.uri}: not connected ({self.connect_error})"]
        return report.inventory(self.settings.uri, self.links, self.unselected)
