"""A hot-added pc-dimm's blocks from its address, without listing the guest's blocks.

When the guest's kernel has created a DIMM's memory blocks it runs the slot's
``_OST`` and QEMU sends ``ACPI_DEVICE_OST``: ``slot-type`` ``DIMM``, ``source``
0 or 1 (bus or device check: an insertion), ``status`` 0 (success) and
``device``, the pc-dimm's ``id=``. The daemon's own QMP monitor then answers
``query-memory-devices`` with that device's guest-physical ``addr`` and
``size``, so its blocks are the phys-indices ``addr // block_size`` up to
``(addr + size) // block_size - 1``, with the guest's block size (read through
the agent once per connection). They are sent as offline ``add`` events at once:
no ``guest-get-memory-blocks`` (a listing of every block of the guest, ~50 ms
under TCG) comes before the first ``guest-set-memory-blocks``.

They are put in the guest's snapshot as offline too (under its ``listing_lock``,
and sent before the lock is released), so the next listing's diff does not
announce them twice. That listing is the safety net: the poller is woken
``resize_quiet`` after the announcement, once adding is over (a listing in the
middle of the onlining could take the agent between two batches). A block the guest
onlined meanwhile then gives ``online``, one it never created ``remove``; blocks
already known (a listing got there first) are not announced again, and the
``replay`` of an agent that was down works on the snapshot as before.

Whenever something is missing, it falls back to a listing (the poller woken
as for any memory event, with fast polling): an ``_OST`` that failed or is not
an insertion, a DIMM without an ``id``, a guest not listed yet (no block size or
snapshot), whose agent is down, or whose kernel onlines by itself, a device
``query-memory-devices`` does not show, or a QMP error or timeout. The query
runs in a task of its own: the event reader never waits for it. The guest can
raise ``_OST`` events at will (its kernel runs the method), so one query per
device is in flight at a time: a repeat while it runs is dropped.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import anyio
import structlog
from anyio.abc import ObjectSendStream, TaskGroup

from hotplugd import BlockEvent, Rescan

from .guest import GuestLink
from .qmp import Monitor, QmpError

log = structlog.get_logger("hotplugd.qga")

#: ``_OST`` source events of an insertion (ACPI: 0 bus check, 1 device check).
INSERTION_SOURCES = frozenset({0, 1})
#: ``_OST`` status: success.
OST_SUCCESS = 0


def inserted_dimm(name: str, data: Mapping[str, Any]) -> str | None:
    """The id of the pc-dimm whose insertion the guest completed, from an ``ACPI_DEVICE_OST``; else None."""
    info = data.get("info")
    if name != "ACPI_DEVICE_OST" or not isinstance(info, dict) or info.get("slot-type") != "DIMM":
        return None
    device = info.get("device")
    if info.get("status") != OST_SUCCESS or info.get("source") not in INSERTION_SOURCES:
        return None
    return device if isinstance(device, str) and device else None


def dimm_blocks(devices: Any, device: str, block_size: int) -> range | None:
    """The phys-indices of the blocks pc-dimm ``device`` covers, from a ``query-memory-devices`` reply.

    Only blocks the DIMM covers whole (the kernel adds no others). None when
    the device is not a pc-dimm of the reply, or covers no whole block.
    """
    if not isinstance(devices, list):
        return None
    for item in devices:
        data = item.get("data") if isinstance(item, dict) else None
        if not isinstance(data, dict) or item.get("type") != "dimm" or data.get("id") != device:
            continue
        addr, size = data.get("addr"), data.get("size")
        if not (isinstance(addr, int) and isinstance(size, int) and addr >= 0 and size > 0):
            return None
        blocks = range(-(-addr // block_size), (addr + size) // block_size)
        return blocks or None
    return None


def _usable(guest: GuestLink) -> bool:
    """The guest's block size and blocks are known, its agent answers, and its kernel leaves blocks offline."""
    return guest.can_announce


class DimmWatcher:
    """The event handler of one guest's monitor: DIMM insertions learned by address, the rest to the guest."""

    def __init__(self, guest: GuestLink, monitor: Monitor, send: ObjectSendStream[BlockEvent | Rescan],
                 tasks: TaskGroup) -> None:
        self.guest = guest
        self._monitor = monitor
        self._send = send
        self._tasks = tasks
        self._learning: set[str] = set()  # devices whose query is in flight

    def __repr__(self) -> str:
        return f"<DimmWatcher {self.guest.name} {self._monitor.path}>"

    def __call__(self, name: str, data: dict[str, Any]) -> None:
        """A QMP event (called by :meth:`Monitor.run`, synchronously: the query goes to a task)."""
        device = inserted_dimm(name, data)
        if device is None or not _usable(self.guest):
            self.guest.on_event(name, data)  # a DIMM event this cannot use wakes the poller there
        elif device not in self._learning:  # a repeat while it is learned adds nothing (a guest can flood _OST)
            self._learning.add(device)
            self._tasks.start_soon(self.learn, device)

    async def learn(self, device: str) -> None:
        """Announce the DIMM's blocks now and list the guest once adding is over; or list it now."""
        guest = self.guest
        try:
            blocks = await self._locate(device)
        finally:
            self._learning.discard(device)
        if blocks is None or not await self._announce(device, blocks):
            guest.memory_event()
            return
        await anyio.sleep(guest.options.resize_quiet)
        guest.wake()  # the safety net, once adding is over

    async def _locate(self, device: str) -> range | None:
        guest = self.guest
        try:
            reply = await self._monitor.execute("query-memory-devices", guest.options.timeout)
        except QmpError as exc:
            log.info("qga_dimm_query_failed", guest=guest.name, device=device, error=str(exc))
            return None
        size = guest.block_size
        blocks = None if size is None else dimm_blocks(reply, device, size)
        if blocks is None:
            log.info("qga_dimm_unknown", guest=guest.name, device=device, detail="not in query-memory-devices")
        return blocks

    async def _announce(self, device: str, blocks: range) -> bool:
        """Put the DIMM's unknown blocks in the snapshot as offline and send their adds; False if it cannot."""
        return await self.guest.announce(blocks, self._send, device)
