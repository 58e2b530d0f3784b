"""Many guests, one domain each: what a host-side backend answers the core from its :class:`AgentLink` s.

Shared by the ``qga`` and ``libvirt`` backends: a scan lists every guest at once
(one slow agent delays only its own part, each bounded by its timeout), the
topology is each guest's own (``Topology.domains``, from what was last read: no
agent round trip), and a run of blocks to online goes to each guest in one
batch, guests one after the other within the call (the core runs each guest's
phase in a task of its own, so guests online in parallel).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence

import anyio

from hotplugd import Block, OnlineResult, Outcome, Topology, ZoneRequest

from .blocks import DEFAULT_BLOCK_SIZE, GUEST_NODE
from .link import AgentLink


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
