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
    """The added blocks of one batch of uevents: found, or still waiting for their node link."""

    def __init__(self, sysfs: Sysfs, fresh: list[int], replayed: list[int]) -> None:
        self.sysfs = sysfs
        self.fresh = set(fresh)
        self.replayed = replayed
        self.found: dict[int, Block] = {}
        self.waiting: list[int] = []
        self._deadline = 0.0
        self._delay = 0.001

    def __repr__(self) -> str:
        return f"<Arrivals found={len(self.found)} waiting={len(self.waiting)}>"

    async def first_look(self) -> None:
        """Read what is readable now (one worker-thread call for the whole batch)."""
        self._deadline = anyio.current_time() + self.sysfs.register_wait
        await self._look(list(self.fresh), self.replayed)

    async def wait_for(self, index: int) -> None:
        """Look again at every waiting block until ``index`` is linked, or the time is up."""
        while index in self.waiting and anyio.current_time() + self._delay <= self._deadline:
            await anyio.sleep(self._delay)
            self._delay = min(self._delay * 2, MAX_POLL)
            waiting = self.waiting
            await self._look([i for i in waiting if i in self.fresh], [i for i in waiting if i not in self.fresh])

    async def _look(self, fresh: list[int], replayed: list[int]) -> None:
        found, self.waiting = await anyio.to_thread.run_sync(look, self.sysfs, fresh, replayed)
        self.found.update(found)
