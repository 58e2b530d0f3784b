"""The sysfs backend: the core's Backend contract over a real (or fake) Linux host."""

from __future__ import annotations

from collections import deque
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

import anyio
import anyio.lowlevel
import structlog

from hotplugd import (
    HOST_DOMAIN,
    Action,
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

from .arrivals import Arrivals
from .conflicts import find_conflicts
from .dax import DaxHost, DeviceRow
from .daxdevices import DEVDAX
from .intake import DaxUEvent, Intake, MemoryUEvent
from .knobs import read_knobs, write_knobs
from .netlink import Batch, Datagram, InjectedSource, NetlinkSource, open_uevent_socket
from .onlining import denied, online_blocks
from .settings import Settings, parse
from .sysfs import BlockInfo, Sysfs, SysfsIO
from .tiers import TierCollector
from .writers import Writers

log = structlog.get_logger("hotplugd.sysfs")

#: Where the kernel onlines (its auto-online is on), how long the intake leaves the socket alone after a
#: batch with the kernel's own memory events: the kernel's walk over a hot-add sends one ``online`` event
#: a block, and reading each at once costs a wake-up and a turn of every loop per block, on the CPUs the
#: kernel needs for its walk. Left alone, the events queue up in the socket and are read, applied and
#: read back (proved) in one go. Nothing waits on them there: the kernel onlines, hotplugd proves.
KERNEL_PACE = 0.1


class Source(Protocol):
    async def receive(self) -> Batch | None: ...

    def close(self) -> None: ...


class SysfsBackend(Backend):
    """Memory blocks under ``/sys/devices/system/memory``, uevents from netlink, onlining by ``state`` writes.

    With ``netlink = false`` no socket is opened: events come from :meth:`feed`
    and :meth:`overflow` (tests on a fake tree, embedding). An injected ``io``
    (a test playing the kernel) is written from worker threads, whatever
    ``writer`` says: a writer process could not reach it.
    """

    def __init__(self, settings: Settings | None = None, io: SysfsIO | None = None) -> None:
        self.settings = settings or Settings()
        self.sysfs = Sysfs(self.settings.root, self.settings.proc, io)
        self.concurrency = self.settings.concurrency
        self.batch_size = self.settings.batch
        self.intake = Intake()
        self.rcvbuf = 0  # the socket's effective receive buffer, once started
        self._injected = InjectedSource()
        self._source: Source | None = None if self.settings.netlink else self._injected
        self.writers = Writers(self.sysfs) if self.settings.writer == "process" and io is None else None
        self.dax = DaxHost(self.sysfs, Path(self.settings.proc), self.settings.dax)
        #: The kernel's auto-online is on (``auto_online_blocks`` as last read): its events are paced.
        self.kernel_onlines = False
        self.pace = KERNEL_PACE

    @classmethod
    def from_options(cls, options: Mapping[str, Any], io: SysfsIO | None = None) -> SysfsBackend:
        """Build from the ``[plugins.sysfs]`` table (invalid values raise ValueError)."""
        return cls(parse(options), io)

    def __repr__(self) -> str:
        source = "netlink" if self.settings.netlink else "injected"
        return f"<SysfsBackend {self.settings.root} [{source}] concurrency={self.concurrency}>"

    def describe(self) -> str:
        source = f"netlink rcvbuf={self.rcvbuf >> 20} MiB" if self.settings.netlink else "injected events"
        writer = "writer process" if self.writers else "worker threads"
        return f"sysfs({self.settings.root}, {source}, {writer}, concurrency={self.concurrency})"

    # -- life cycle -------------------------------------------------------------

    async def start(self) -> None:
        """Check write access, start the writer, then bind the uevent socket (before the daemon's coldplug scan)."""
        await anyio.to_thread.run_sync(self._check_access)
        self.kernel_onlines = await anyio.to_thread.run_sync(self._auto_online)
        if self.writers is not None:
            await self.writers.start()
        if self.settings.netlink:
            try:
                sock, self.rcvbuf = open_uevent_socket(self.settings.rcvbuf)
            except BackendError:
                if self.writers is not None:
                    await self.writers.aclose()
                raise
            self._source = NetlinkSource(sock)
            log.debug("uevent_socket_bound", rcvbuf=self.rcvbuf)

    def _check_access(self) -> None:
        memory = self.sysfs.memory_dir
        try:
            indices = self.sysfs.indices()
        except FileNotFoundError:
            raise BackendError(f"{memory} does not exist: no memory hotplug on this host, or a wrong sysfs root",
                               hint="check plugins.sysfs.root and that the kernel has CONFIG_MEMORY_HOTPLUG") from None
        except PermissionError:
            raise denied(memory) from None
        target = self.sysfs.state_path(indices[0]) if indices else memory
        if not self.sysfs.io.writable(target):
            raise denied(target)

    async def stop(self) -> None:
        if self._source is not None:
            self._source.close()
        if self.writers is not None:
            await self.writers.aclose()

    # -- reading the host ---------------------------------------------------------

    async def scan(self) -> Scan:
        (infos, unregistered), topology = await anyio.to_thread.run_sync(self._scan)
        if unregistered:  # their add events, if not read yet, retry on their own
            log.warning("blocks_not_registered", blocks=unregistered, waited=self.sysfs.register_wait)
        return Scan(self.dax.quiet.keep(self.dax.label([info.block for info in infos])), topology)

    def _scan(self) -> tuple[tuple[list[BlockInfo], list[int]], Topology]:
        self.dax.reconcile()  # named devdax devices become memory blocks first: this scan sees them
        return self.sysfs.scan(), self._topology()

    async def topology(self) -> Topology:
        return await anyio.to_thread.run_sync(self._topology)

    def _topology(self) -> Topology:
        topology = self.sysfs.topology()
        self.kernel_onlines = topology.kernel_onlines
        return topology

    def _auto_online(self) -> bool:
        return self.sysfs.auto_online_blocks() != "offline"

    def census(self) -> Iterable[Block]:
        self.dax.refresh()
        return self.dax.label(self.sysfs.census())

    def dropped_counts(self) -> dict[str, int]:
        return dict(self.intake.dropped)

    async def conflicts(self) -> list[str]:
        """udev rules and kernel settings, then the named dax devices that cannot be converted."""
        found = await anyio.to_thread.run_sync(find_conflicts, self.sysfs, self.settings.udev_rules_dirs)
        return found + await anyio.to_thread.run_sync(self.dax.conflicts)

    # -- dax devices ------------------------------------------------------------------

    def set_device_zone(self, zone: ZoneRequest | None) -> None:
        """``[zones.dax]``'s zone: a named device with the 2026 ``state`` attribute is onlined whole into it."""
        self.dax.zone = zone

    async def memory_sources(self, domain: str = HOST_DOMAIN) -> list[str]:
        """The dax devices whose memory ``[zones.dax]`` governs: named by the config, or bound to kmem already."""
        if domain != HOST_DOMAIN:
            return []
        return await anyio.to_thread.run_sync(self.dax.sources)

    def device_rows(self) -> list[DeviceRow]:
        """The dax devices for ``hotplugd status``: device, mode, node, size, tier (blocking, read only)."""
        return self.dax.rows()

    def collectors(self) -> list[TierCollector]:
        """Prometheus collectors of what only sysfs knows: memory tiers, demotion, dax devices."""
        return [TierCollector(self.sysfs, self.dax.rows)]

    # -- the kernel's own onlining --------------------------------------------------

    async def kernel_knobs(self, domain: str = HOST_DOMAIN) -> KernelKnobs | None:
        """The host kernel's knobs (:func:`.knobs.read_knobs`); None for any other domain (there is none)."""
        if domain != HOST_DOMAIN:
            return None
        return await anyio.to_thread.run_sync(read_knobs, self.sysfs)

    async def set_kernel_knobs(self, values: Mapping[str, str], domain: str = HOST_DOMAIN) -> None:
        """Write the knobs in order, from one worker-thread call (:func:`.knobs.write_knobs`)."""
        if domain != HOST_DOMAIN:
            raise BackendError(f"the sysfs backend has only the {HOST_DOMAIN!r} domain, not {domain!r}")
        try:
            await anyio.to_thread.run_sync(write_knobs, self.sysfs, dict(values))
        finally:
            self.kernel_onlines = await anyio.to_thread.run_sync(self._auto_online)

    async def verify(self, blocks: Sequence[Block]) -> list[Block | None]:
        """Just these blocks read back (``state``, ``online``, ``valid_zones``), in one worker-thread call."""
        return await anyio.to_thread.run_sync(self._verify, list(blocks))

    def _verify(self, blocks: list[Block]) -> list[Block | None]:
        return [self.sysfs.verify_block(block) for block in blocks]

    # -- events ---------------------------------------------------------------------

    def events(self) -> AsyncIterator[BlockEvent | Rescan]:
        return self._events()

    async def _events(self) -> AsyncIterator[BlockEvent | Rescan]:
        if self._source is None:
            raise BackendError("the sysfs backend's events() was read before start()")
        kernels = False  # the last batch had the kernel's own memory events
        while True:
            if kernels and self.kernel_onlines:
                await self._pause()  # the kernel onlines: let its next events queue up (KERNEL_PACE)
            batch = await self._source.receive()
            if batch is None:
                return
            arrivals = Arrivals(self.sysfs)
            sources_read = False
            kernels = False
            # Decoded one at a time, so that a hot-add's first block is queued before the rest
            # of its events are parsed; a replay has the rest parsed at once (one sysfs read).
            items: deque[Datagram | MemoryUEvent | DaxUEvent] = deque(batch.datagrams)
            while items:
                item = items.popleft()
                uevent = self._decoded(item)
                if uevent is None:
                    continue
                if isinstance(uevent, DaxUEvent):
                    await self._dax_bound(uevent)
                    continue
                if self._quiet(uevent):
                    continue
                kernels = kernels or not uevent.synthetic
                if uevent.action is Action.ADD and uevent.synthetic and not arrivals.replays_read:
                    items = deque(e for e in map(self._decoded, items) if e is not None)
                    await arrivals.read_replayed([uevent.index, *(e.index for e in items if e.action is Action.ADD
                                                                  and e.synthetic)])
                if uevent.action is Action.ADD:  # in order: later events may concern this block
                    block = await arrivals.block(uevent.index, uevent.synthetic)
                    if not sources_read:  # kmem's blocks are announced before its bind uevent
                        self.dax.refresh()
                        sources_read = True
                    if block is not None and not uevent.synthetic and self.dax.quiet.whole(block.index):
                        # a device onlined whole: the block comes online, not offline as a fresh add is
                        block = await anyio.to_thread.run_sync(self.sysfs.verify_block, block)
                    if block is not None and self.dax.ranges:
                        block = self.dax.label([block])[0]
                    if block is not None:
                        yield BlockEvent(Action.ADD, uevent.index, block, uevent.synthetic)
                        if items and not self.kernel_onlines:
                            # Let the scheduler start onlining the first blocks of a big hot-add
                            # while the rest of its events are read (the consumer never awaits;
                            # after a batch's last event, waiting for the next batch yields).
                            # Where the kernel onlines there is nothing to start.
                            await anyio.lowlevel.checkpoint()
                elif not uevent.synthetic:  # a replayed remove/online/offline reports no change
                    yield BlockEvent(uevent.action, uevent.index)
            if arrivals.not_registered:
                log.error("blocks_not_registered", blocks=arrivals.not_registered, waited=self.sysfs.register_wait)
                yield Rescan("not_registered")
            if batch.overflow:
                log.warning("uevents_lost", reason="ENOBUFS")
                yield Rescan("overflow")

    async def _pause(self) -> None:
        await anyio.sleep(self.pace)

    def _quiet(self, uevent: MemoryUEvent) -> bool:
        """A block of a dax device being onlined whole or going away (:class:`.daxstate.Quiet`): dropped."""
        dax = uevent.action is Action.OFFLINE and self.dax.source_of(uevent.index) != ""
        return self.dax.quiet.drops(uevent.action, uevent.index, uevent.synthetic, uevent.seqnum, dax)

    def _decoded(self, item: Datagram | MemoryUEvent | DaxUEvent) -> MemoryUEvent | DaxUEvent | None:
        return item if isinstance(item, MemoryUEvent | DaxUEvent) else self.intake.decode(item)

    async def _dax_bound(self, uevent: DaxUEvent) -> None:
        """A device bound to device_dax (a new devdax device, or one given back): convert it if named.

        The kmem driver's blocks then arrive as ordinary ``add`` uevents.
        """
        log.debug("dax_bound", device=uevent.device, driver=uevent.driver)
        if uevent.driver == DEVDAX and self.settings.dax:
            await anyio.to_thread.run_sync(self.dax.reconcile)

    def feed(self, data: bytes, sender: int = 0, truncated: bool = False) -> None:
        """Hand in one raw uevent datagram as if received from netlink (``netlink = false`` only)."""
        self._require_injected()
        self._injected.feed(Datagram(data, sender, truncated))

    def overflow(self) -> None:
        """Act as if netlink had failed with ENOBUFS: the stream yields ``Rescan("overflow")``."""
        self._require_injected()
        self._injected.overflow()

    def end(self) -> None:
        """End the injected event stream (lets a daemon's ``until_idle`` run finish)."""
        self._require_injected()
        self._injected.end()

    def _require_injected(self) -> None:
        if self.settings.netlink:
            raise BackendError("feed/overflow/end need plugins.sysfs.netlink = false")

    # -- onlining ---------------------------------------------------------------------

    async def online(self, block: Block, zone: ZoneRequest) -> OnlineResult:
        return (await self.online_many([(block, zone)]))[0]

    async def online_many(self, items: Sequence[tuple[Block, ZoneRequest]]) -> list[OnlineResult]:
        """The writer process (or one worker-thread call) writes the run back to back."""
        if self.writers is not None:
            return await self.writers.online_many(items)
        return await anyio.to_thread.run_sync(online_blocks, self.sysfs, list(items))

