"""Added blocks, from their ``add`` uevents to queued Blocks, with as little sysfs reading as possible.

A fresh (kernel-sent) ``add`` announces a new, offline block: the only thing
the queue needs that the uevent lacks is the block's node, which the ``nodeN``
link in its directory gives (one ``listdir``). ``state`` and ``valid_zones``
are not read here: the block is offline, and its zone is read back after the
online (:mod:`.onlining`). The event carries ``valid_zones = ()`` (unknown),
which the core's zone narrowing leaves alone; the online call narrows an
explicit request itself if the kernel refuses it.

A synthetic ``add`` (a replay, e.g. ``udevadm trigger``) may name a block that
is online already: it is read in full, as a scan would.

The kernel announces a block before it links it to its node, and until then
``valid_zones`` must not be read (6.1 oopses). A block not linked yet is looked
at again, polling finely (the kernel links the whole hot-add within
milliseconds), until ``register_wait`` seconds after the first look.
"""

from __future__ import annotations

import anyio

from hotplugd import Block, State

from .sysfs import Sysfs, is_gone

#: The longest pause between two looks at blocks not linked to their node yet.
MAX_POLL = 0.01


def look(sysfs: Sysfs, fresh: list[int], replayed: list[int]) -> tuple[dict[int, Block], list[int]]:
    """Blocking: the added blocks found (fresh ones from their node link only), and those not linked yet."""
    found, waiting = sysfs.read_blocks(replayed) if replayed else ({}, [])
    for index in fresh:
        try:
            node = sysfs.node_of(index)
        except OSError as exc:
            if is_gone(exc):  # removed again before we looked
                continue
            raise
        if node is None:
            waiting.append(index)
        else:
            found[index] = Block(index=index, size=sysfs.block_size, node=node, state=State.OFFLINE)
    return found, waiting


class Arrivals:
    """The added blocks of one batch of uevents, looked at in the order of their events.

    Fresh adds are looked at in the event loop's thread, one ``listdir`` of a
    kernfs directory each: memory-only, it never waits on a device (like the
    netlink socket's non-blocking ``recvmsg``), while a worker-thread round trip
    costs 2 to 3 ms under TCG, which virtio-mem (adding a block at a time, then
    waiting for its onlining) would pay on every block. Replays are read in full
    in a worker thread.
    """

    def __init__(self, sysfs: Sysfs) -> None:
        self.sysfs = sysfs
        self.replays_read = False
        self.found: dict[int, Block] = {}
        self.waiting: list[int] = []  # replays not linked yet
        self.unlinked: list[int] = []  # given up on after ``register_wait``
        self._deadline = anyio.current_time() + sysfs.register_wait
        self._delay = 0.001

    def __repr__(self) -> str:
        return f"<Arrivals found={len(self.found)} waiting={len(self.waiting)} unlinked={len(self.unlinked)}>"

    async def read_replayed(self, indices: list[int]) -> None:
        """Read the batch's replayed adds (one worker-thread call), once."""
        self.replays_read = True
        if indices:
            await self._look_replayed(indices)

    async def block(self, index: int, synthetic: bool) -> Block | None:
        """The added block ``index`` once linked to its node; None when gone, or not linked in time."""
        if synthetic:
            while index in self.waiting and self._pause():
                await anyio.sleep(self._next_delay())
                await self._look_replayed(self.waiting)
            block = self.found.get(index)
        else:
            block = self._look_fresh(index)
            while block is None and index in self.unlinked and self._pause():
                await anyio.sleep(self._next_delay())
                block = self._look_fresh(index)
        if block is not None:
            self._delay = 0.001  # the kernel links a hot-add's blocks in ascending order, quickly
        return block

    def _look_fresh(self, index: int) -> Block | None:
        found, waiting = look(self.sysfs, [index], [])
        if waiting:
            if index not in self.unlinked:
                self.unlinked.append(index)
            return None
        if index in self.unlinked:
            self.unlinked.remove(index)
        return found.get(index)

    async def _look_replayed(self, indices: list[int]) -> None:
        found, self.waiting = await anyio.to_thread.run_sync(look, self.sysfs, [], list(indices))
        self.found.update(found)

    def _pause(self) -> bool:
        return anyio.current_time() + self._delay <= self._deadline

    def _next_delay(self) -> float:
        delay, self._delay = self._delay, min(self._delay * 2, MAX_POLL)
        return delay

    @property
    def not_registered(self) -> list[int]:
        """Added blocks still without a node link when given up on."""
        return self.unlinked + self.waiting
