"""Block identity across guests, and block events from two readings of a guest's block list.

One guest is one "node" of the core's model: ``Block.node`` is the guest's
number (its place in ``[[plugins.qga.guest]]``), and the block's ``index``
carries the guest number above the guest's own ``phys_index``::

    index = guest << 32 | phys_index

so indices are unique across guests, ascending within a guest (the final
phase's address order), and decoded with :func:`split_index`. 2**32 blocks
per guest exceeds any physical address space (52 bits of 128 MiB blocks is 2**25).
"""

from __future__ import annotations

from hotplugd import Action, Block, BlockEvent, State

GUEST_SHIFT = 32
PHYS_MASK = (1 << GUEST_SHIFT) - 1
#: Until the agent told the guest's block size (x86's memory block size).
DEFAULT_BLOCK_SIZE = 128 << 20


def block_index(guest: int, phys_index: int) -> int:
    """The core's block index of ``phys_index`` in guest number ``guest``."""
    if not 0 <= phys_index <= PHYS_MASK:
        raise ValueError(f"phys_index {phys_index} out of range")
    return guest << GUEST_SHIFT | phys_index


def split_index(index: int) -> tuple[int, int]:
    """``(guest number, phys_index)`` of a core block index."""
    return index >> GUEST_SHIFT, index & PHYS_MASK


def to_block(guest: int, phys_index: int, online: bool, size: int) -> Block:
    """A core Block; qga tells no zones, so ``valid_zones`` stays empty (the zone policy is not narrowed)."""
    return Block(block_index(guest, phys_index), size, guest, State.ONLINE if online else State.OFFLINE)


def diff(guest: int, size: int, previous: dict[int, bool], current: dict[int, bool],
         replay: bool = False) -> list[BlockEvent]:
    """The events that turn ``previous`` into ``current`` (phys_index → online).

    New blocks give ``add`` (and ``online`` too when already online, as the
    kernel's uevents would); state changes give ``online``/``offline``; vanished
    blocks give ``remove``. With ``replay`` (the agent was unreachable for a
    while, its view may have been lost) every offline block that did not change
    is announced again as a synthetic ``add``: the scheduler re-queues blocks it
    had given up on, and ignores those it already holds.
    """
    events: list[BlockEvent] = []
    for phys in sorted(previous.keys() - current.keys()):
        events.append(BlockEvent(Action.REMOVE, block_index(guest, phys)))
    for phys in sorted(current):
        online = current[phys]
        index = block_index(guest, phys)
        if phys not in previous:
            events.append(BlockEvent(Action.ADD, index, to_block(guest, phys, online, size)))
            if online:
                events.append(BlockEvent(Action.ONLINE, index))
        elif previous[phys] != online:
            events.append(BlockEvent(Action.ONLINE if online else Action.OFFLINE, index))
        elif replay and not online:
            events.append(BlockEvent(Action.ADD, index, to_block(guest, phys, online, size), synthetic=True))
    return events
