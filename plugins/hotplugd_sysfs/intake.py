"""From datagrams to memory block events: sender check, cheap triage, parse, drop counts.

Besides memory blocks, one other kind of event is kept: a dax device bound to a
driver (``bind`` with ``SUBSYSTEM=dax``), the moment a new devdax device can be
converted (:mod:`.dax`). Other subsystems cost one more substring search.
"""

from __future__ import annotations

import enum
import re
from collections import Counter
from dataclasses import dataclass

import structlog

from hotplugd import Action

from .netlink import Datagram
from .uevent import MAX_UEVENT, memory_header, parse

log = structlog.get_logger("hotplugd.sysfs")


class Drop(enum.StrEnum):
    """Why a message was dropped (the ``reason`` label of ``hotplugd_uevents_dropped``)."""

    MALFORMED = "malformed"
    NOT_KERNEL = "not_kernel"
    OVERSIZED = "oversized"


@dataclass(frozen=True, slots=True)
class MemoryUEvent:
    """A memory block's uevent, reduced to what the daemon acts on."""

    action: Action
    index: int
    synthetic: bool = False
    seqnum: int | None = None


#: Action by its uevent name: a dict lookup per event, not the enum's call.
_ACTIONS = {action.value: action for action in Action}

#: The body field every dax bus uevent has (the cheap check after the memory triage).
_DAX_MARK = b"\0SUBSYSTEM=dax\0"
_DAX_NAME = re.compile(r"dax\d+\.\d+")


@dataclass(frozen=True, slots=True)
class DaxUEvent:
    """A dax device bound to a driver (``DRIVER=device_dax``: a new devdax device)."""

    action: str
    device: str
    driver: str = ""
    synthetic: bool = False


class Intake:
    """Turns datagrams into MemoryUEvents; drops (and counts) what is not a kernel memory event."""

    def __init__(self) -> None:
        self.dropped: Counter[str] = Counter()
        self.skipped = 0  # other subsystems and actions: expected, not errors

    def __repr__(self) -> str:
        return f"<Intake dropped={dict(self.dropped)} skipped={self.skipped}>"

    def _drop(self, reason: Drop, datagram: Datagram) -> None:
        self.dropped[reason.value] += 1
        log.debug("uevent_dropped", reason=reason.value, sender=datagram.sender, size=len(datagram.data))

    def decode(self, datagram: Datagram) -> MemoryUEvent | DaxUEvent | None:
        """The memory event (or dax bind) in ``datagram``, or None (dropped and counted, or skipped)."""
        if datagram.sender != 0:
            self._drop(Drop.NOT_KERNEL, datagram)
            return None
        if datagram.truncated or len(datagram.data) > MAX_UEVENT:
            self._drop(Drop.OVERSIZED, datagram)
            return None
        triage = memory_header(datagram.data)
        if triage is None:
            self._drop(Drop.MALFORMED, datagram)
            return None
        if not triage:
            if _DAX_MARK in datagram.data:
                return self._dax(datagram)
            self.skipped += 1
            return None
        event = parse(datagram.data)
        index = event.memory_index if event is not None else None
        if event is None or index is None:
            self._drop(Drop.MALFORMED, datagram)
            return None
        action = _ACTIONS.get(event.action)
        if action is None:  # change, move, bind...: nothing to do
            self.skipped += 1
            return None
        return MemoryUEvent(action, index, event.synthetic, event.seqnum)

    def _dax(self, datagram: Datagram) -> DaxUEvent | None:
        event = parse(datagram.data)
        if event is None:
            self._drop(Drop.MALFORMED, datagram)
            return None
        name = event.devpath.rsplit("/", 1)[-1]
        if event.action != "bind" or event.subsystem != "dax" or not _DAX_NAME.fullmatch(name):
            self.skipped += 1
            return None
        return DaxUEvent(event.action, name, event.env.get("DRIVER", ""), event.synthetic)
