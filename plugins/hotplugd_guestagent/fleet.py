"""Many guests, one domain each: the part of a host-side backend that is the same whatever carries the requests.

:class:`GuestFleet` is the base of the ``qga`` and ``libvirt`` backends. It
keeps their guests' :class:`AgentLink` s (``links``, by name) and answers the
core from them:

- a scan lists every guest at once (one slow agent delays only its own part,
  each bounded by its timeout); the topology is each guest's own
  (``Topology.domains``, from what was last read: no agent round trip); a run
  of blocks to online goes to each guest in one batch, guests one after the
  other within the call (the core runs each guest's phase in a task of its own,
  so guests online in parallel); a zone other than ``auto`` is logged once and
  not applied (the agent writes ``online``: each guest's kernel picks the zone);
- :meth:`GuestFleet.events` runs, in one task group, one task per guest (its
  poller, :func:`poll_forever`, or what the backend runs instead:
  :meth:`GuestFleet.run_link`) in a cancel scope of its own, the backend's own
  tasks (:meth:`GuestFleet.background`), and the watch for guests appearing and
  going away: :meth:`GuestFleet.rediscover` every ``discover_interval``, or at
  once when :meth:`GuestFleet.want_rediscover` is called (coalesced);
- a guest found at run time (:meth:`GuestFleet.adopt`) is listed at once, its
  blocks arriving as adds; one that went away (:meth:`GuestFleet.drop`) has its
  task cancelled, its blocks removed and a rescan drops its empty domain.

How a backend finds its guests and hears of their memory is its own.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping, Sequence
from typing import Any, Generic, Protocol, TypeVar

import anyio
import structlog
from anyio.abc import ObjectSendStream, TaskGroup

from hotplugd import Backend, Block, BlockEvent, OnlineResult, Outcome, Rescan, Scan, Topology, ZoneRequest

from .blocks import DEFAULT_BLOCK_SIZE, GUEST_NODE, removals
from .link import AgentLink, LinkOptions

#: Block events buffered between the guests' tasks and the daemon's intake.
EVENT_BUFFER = 4096

L = TypeVar("L", bound=AgentLink)


class FleetOptions(LinkOptions, Protocol):
    """The settings a :class:`GuestFleet` reads besides its links' (both backends' ``Settings`` have them)."""

    @property
    def concurrency(self) -> int: ...  # blocks one guest's kernel onlines at once
    @property
    def max_batch(self) -> int: ...  # the backend's batch_size
    @property
    def discover_interval(self) -> float: ...  # the guest list read again this often


class GuestFleet(Backend, Generic[L]):
    """The guests of one backend, each a domain of the core named by the guest's name.

    ``kind`` (``qga``, ``libvirt``) prefixes the log events and names the logger;
    ``member`` (``guest``, ``domain``) names one guest in them.
    """

    kind = "agent"
    member = "guest"

    def __init__(self, settings: FleetOptions, parallel_domains: int) -> None:
        self.settings = settings
        self.concurrency = settings.concurrency
        self.parallel_domains = parallel_domains
        self.batch_size = settings.max_batch
        self.links: dict[str, L] = {}
        self.log = structlog.get_logger(f"hotplugd.{self.kind}")
        self._scopes: dict[str, anyio.CancelScope] = {}
        self._tasks: TaskGroup | None = None  # while events() runs
        self._send: ObjectSendStream[BlockEvent | Rescan] | None = None
        self._rediscover_wanted: anyio.Event | None = None
        self._zone_warned = False

    # -- what a backend adds ----------------------------------------------------------------

    async def run_link(self, link: L, send: ObjectSendStream[BlockEvent | Rescan]) -> None:
        """The guest's task, until cancelled (it went away, or the stream ended): by default its poller."""
        await poll_forever(link, send)

    def background(self) -> Sequence[Callable[[], Awaitable[Any]]]:
        """The backend's own tasks beside the guests' (an event reader, a connection keeper)."""
        return ()

    @property
    def watches_guests(self) -> bool:
        """Whether guests come and go (:meth:`rediscover` is then run every ``discover_interval``)."""
        return True

    async def rediscover(self) -> None:
        """Read the guest list again: :meth:`adopt` the new guests, :meth:`drop` those gone."""

    async def release(self, link: L) -> None:
        """What the backend closes of a guest it drops (its task is cancelled already)."""

    # -- guests that come and go ------------------------------------------------------------

    def adopt(self, link: L) -> None:
        """Manage ``link`` from now on; while the stream runs its blocks are listed at once (they arrive as adds)."""
        self.links[link.name] = link
        if self._tasks is not None:
            link.wake()
            self._launch(link)

    async def drop(self, name: str, **why: Any) -> None:
        """Stop managing a guest that went away: its task cancelled, its blocks removed, and a rescan drops
        its empty domain in the core."""
        link = self.links.pop(name)
        scope = self._scopes.pop(name, None)
        if scope is not None:
            scope.cancel()
        await self.release(link)
        self.log.info(f"{self.kind}_{self.member}_gone", **{self.member: name}, **why)
        if self._send is not None:
            for event in removals(name, link.snapshot):
                await self._send.send(event)
            await self._send.send(Rescan("guest_gone"))

    def want_rediscover(self) -> None:
        """Read the guest list again soon (coalesced: one reading for a burst of calls)."""
        if self._rediscover_wanted is not None:
            self._rediscover_wanted.set()

    async def _rediscover_forever(self) -> None:
        while True:
            wanted = self._rediscover_wanted = anyio.Event()
            with anyio.move_on_after(self.settings.discover_interval):
                await wanted.wait()
            await self.rediscover()

    # -- life cycle ---------------------------------------------------------------------------

    async def stop(self) -> None:
        for scope in self._scopes.values():
            scope.cancel()

    def events(self) -> AsyncIterator[BlockEvent | Rescan]:
        return self._events()

    async def _events(self) -> AsyncIterator[BlockEvent | Rescan]:
        send, receive = anyio.create_memory_object_stream[BlockEvent | Rescan](EVENT_BUFFER)
        async with anyio.create_task_group() as tg:
            self._tasks, self._send = tg, send
            try:
                for link in list(self.links.values()):
                    self._launch(link)
                for task in self.background():
                    tg.start_soon(task)
                if self.watches_guests:
                    tg.start_soon(self._rediscover_forever)
                async with receive:
                    async for event in receive:
                        yield event
            finally:
                self._tasks, self._send = None, None
                send.close()
                tg.cancel_scope.cancel()

    def _launch(self, link: L) -> None:
        """Start the guest's task, in a scope of its own (cancelled when it goes away)."""
        assert self._tasks is not None and self._send is not None
        scope = self._scopes[link.name] = anyio.CancelScope()
        self._tasks.start_soon(self._run_link, link, scope, self._send.clone())

    async def _run_link(self, link: L, scope: anyio.CancelScope, send: ObjectSendStream[BlockEvent | Rescan]) -> None:
        with scope:
            async with send:
                await self.run_link(link, send)

    # -- reading and onlining ---------------------------------------------------------------------

    async def scan(self) -> Scan:
        return Scan(await scan_all(self.links.values()), await self.topology())

    async def topology(self) -> Topology:
        """Each guest's own topology (``domains``), from what was last read: no agent round trip."""
        return topology_of(self.links.values())

    async def domain_topology(self, domain: str) -> Topology:
        """One guest's topology alone: each guest's domain refreshes its own, not all of them."""
        link = self.links.get(domain)
        return link.topology() if link is not None else (await self.topology()).for_domain(domain)

    def census(self) -> Iterable[Block] | None:
        return census_of(list(self.links.values()))

    def _check_zone(self, zone: ZoneRequest) -> None:
        if zone is not ZoneRequest.AUTO and not self._zone_warned:
            self._zone_warned = True
            self.log.warning(f"{self.kind}_zone_ignored", requested=zone.value,
                             detail="the agent writes `online`: each guest's kernel picks the zone")

    async def online(self, block: Block, zone: ZoneRequest) -> OnlineResult:
        return (await self.online_many([(block, zone)]))[0]

    async def online_many(self, items: Sequence[tuple[Block, ZoneRequest]]) -> list[OnlineResult]:
        """A run of blocks: one ``guest-set-memory-blocks`` per guest (and per ``max_batch`` blocks)."""
        return await online_by_guest(self.links, items, self._check_zone)


async def poll_forever(link: AgentLink, send: ObjectSendStream[BlockEvent | Rescan]) -> None:
    """Forever: wait for the guest's next poll, list its blocks, send what changed."""
    while True:
        await link.next_poll()
        for event in await link.refresh():
            await send.send(event)


async def scan_all(links: Iterable[AgentLink]) -> list[Block]:
    """Every guest's blocks, listed at once (a guest whose agent is down gives its last known ones)."""
    guests = list(links)
    found: dict[str, list[Block]] = {}

    async def one(link: AgentLink) -> None:
        found[link.name] = await link.scan()

    async with anyio.create_task_group() as tg:
        for link in guests:
            tg.start_soon(one, link)
    return [b for g in guests for b in found.get(g.name, [])]


def topology_of(links: Iterable[AgentLink]) -> Topology:
    """Each guest's own topology (``domains``); the host-wide fields are the default for a guest not known yet."""
    guests = list(links)
    sizes = Counter(g.block_size for g in guests if g.block_size)
    return Topology(
        cpus_per_node={GUEST_NODE: 1},
        mem_available=sum(g.mem_available or 0 for g in guests),
        block_size=sizes.most_common(1)[0][0] if sizes else DEFAULT_BLOCK_SIZE,
        domains={g.name: g.topology() for g in guests},
    )


def census_of(links: Iterable[AgentLink]) -> list[Block] | None:
    """Every block as last listed (None before any guest was listed)."""
    guests = list(links)
    if all(g.snapshot is None for g in guests):
        return None
    return [b for g in guests for b in g.blocks()]


async def online_by_guest(links: Mapping[str, AgentLink], items: Sequence[tuple[Block, ZoneRequest]],
                          check_zone: Callable[[ZoneRequest], None] = lambda zone: None) -> list[OnlineResult]:
    """Online a run of blocks: each guest's in one batch (``guest-set-memory-blocks`` per ``max_batch``);
    a block of a guest no longer known is ``gone``."""
    results: list[OnlineResult | None] = [None] * len(items)
    by_guest: dict[str, list[int]] = {}
    for position, (block, zone) in enumerate(items):
        check_zone(zone)
        by_guest.setdefault(block.domain, []).append(position)
    for name, positions in by_guest.items():
        link = links.get(name)
        if link is None:
            answers = [OnlineResult(Outcome.GONE, detail=f"guest {name} is gone")] * len(positions)
        else:
            answers = await link.online_many([items[p][0].index for p in positions])
        for position, answer in zip(positions, answers, strict=True):
            results[position] = answer
    return [r for r in results if r is not None]
