"""Blocks of a guest in the core's model, and block events from two readings of its block list.

Each guest is a *domain* of the core, named by the guest's name: a block's
``index`` is the guest's own ``phys-index`` (unique within the guest, which
is all the core asks), ``domain`` the guest's name. ``node`` is 0: the agent
does not say which NUMA node of the guest a block belongs to.
"""

from __future__ import annotations

import dataclasses

from hotplugd import Action, Block, BlockEvent, State

#: Until the agent told the guest's block size (x86's memory block size).
DEFAULT_BLOCK_SIZE = 128 << 20
#: The agent tells no NUMA node: every block of a guest is on node 0.
GUEST_NODE = 0


def to_block(guest: str, phys_index: int, online: bool, size: int) -> Block:
    """A core Block; qga tells no zones, so ``valid_zones`` stays empty (the zone policy is not narrowed)."""
    return Block(phys_index, size, GUEST_NODE, State.ONLINE if online else State.OFFLINE, domain=guest)


def diff(guest: str, size: int, previous: dict[int, bool], current: dict[int, bool],
         replay: bool = False) -> list[BlockEvent]:
    """The events of guest ``guest`` that turn ``previous`` into ``current`` (phys_index → online).

    New blocks give ``add`` (and ``online`` too when already online, as the
    kernel's uevents would); state changes give ``online``/``offline``; vanished
    blocks give ``remove``. With ``replay`` (the agent was unreachable for a
    while, its view may have been lost) every offline block that did not change
    is announced again as a synthetic ``add``: the scheduler re-queues blocks it
    had given up on, and ignores those it already holds. Every ``add`` but the
    last says ``more``: the listing's adds go to one phase.
    """
    events: list[BlockEvent] = []
    for phys in sorted(previous.keys() - current.keys()):
        events.append(BlockEvent(Action.REMOVE, phys, domain=guest))
    for phys in sorted(current):
        online = current[phys]
        if phys not in previous:
            events.append(BlockEvent(Action.ADD, phys, to_block(guest, phys, online, size), domain=guest))
            if online:
                events.append(BlockEvent(Action.ONLINE, phys, domain=guest))
        elif previous[phys] != online:
            events.append(BlockEvent(Action.ONLINE if online else Action.OFFLINE, phys, domain=guest))
        elif replay and not online:
            events.append(BlockEvent(Action.ADD, phys, to_block(guest, phys, online, size), synthetic=True,
                                     domain=guest))
    return announced_together(events)


def announced_together(events: list[BlockEvent]) -> list[BlockEvent]:
    """``events`` with ``more`` set on every ``add`` but the last (they are sent back to back)."""
    adds = [i for i, e in enumerate(events) if e.action is Action.ADD]
    held = set(adds[:-1])
    return [dataclasses.replace(e, more=True) if i in held else e for i, e in enumerate(events)]


def removals(guest: str, blocks: dict[int, bool] | None) -> list[BlockEvent]:
    """``remove`` for every block of a guest that went away (its domain then empties and is dropped)."""
    return [BlockEvent(Action.REMOVE, phys, domain=guest) for phys in sorted(blocks or {})]
