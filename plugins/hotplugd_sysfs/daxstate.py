"""The 2026 kernels' whole-device hotplug, ``daxX.Y/state``, and the blocks hotplugd must leave alone meanwhile.

Linux adds a ``state`` attribute to each device bound to kmem (Gregory Price's "dax/kmem:
add sysfs interface for atomic whole-device hotplug"): it reads ``unplugged``, ``offline``
(the probe added the blocks offline: ``auto_online_blocks`` was ``offline``), ``online``,
``online_kernel`` or ``online_movable``; writing ``unplugged`` offlines and removes every
block at once (all or nothing), writing an online type adds and onlines every block, and
only from ``unplugged`` (EBUSY otherwise); ``offline`` is never written. It exists because
per-block onlining races with removal: "another entity operates directly on the memory
blocks". So where a named device has it, hotplugd onlines it whole (:func:`online_whole`):
``unplugged`` first when the probe left it ``offline``, then the ``[zones.dax]`` zone, one
write; its blocks are never written one by one. The engine still reads each one back (their
``add`` uevents come with the blocks online) and counts it as not written by hotplugd.

:class:`Quiet` keeps the engine off blocks that are going away:

- a device being converted and onlined whole: from before its bind until the zone write, its
  blocks' uevents (the probe's ``add``, the unplug's ``offline``/``remove``) are dropped, and
  afterwards every one with a sequence number up to the kernel's ``uevent_seqnum`` read just
  before the zone write; the zone write's own events pass;
- a dax block whose ``offline`` uevent came (``daxctl reconfigure-device --mode=devdax``, a
  ``state`` write of ``unplugged`` by someone else, an operator): hotplugd never onlines it
  again, neither from a replayed ``add`` nor from a rescan, until the kernel adds it afresh.
"""

from __future__ import annotations

import errno
import threading
from dataclasses import dataclass, field

from hotplugd import Action, Block, State, ZoneRequest

from .daxdevices import KMEM, DaxDevice
from .sysfs import Sysfs

__all__ = ["Quiet", "online_whole"]

#: What daxX.Y/state reads once onlined, by the zone written.
ONLINE_STATES = ("online", "online_kernel", "online_movable")


@dataclass
class Quiet:
    """Blocks whose uevents the backend drops, and blocks it never onlines again (thread-safe)."""

    #: first block, end block -> drop their events up to this seqnum (None: all of them, for now).
    held: dict[tuple[int, int], int | None] = field(default_factory=dict)
    retired: set[int] = field(default_factory=set)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def hold(self, blocks: range) -> None:
        with self.lock:
            self.held[(blocks.start, blocks.stop)] = None

    def up_to(self, blocks: range, seqnum: int | None) -> None:
        """Drop only the events up to ``seqnum`` from now on (None, unknown: stop dropping)."""
        with self.lock:
            if seqnum is None:
                self.held.pop((blocks.start, blocks.stop), None)
            else:
                self.held[(blocks.start, blocks.stop)] = seqnum

    def settle(self, blocks: range) -> None:
        """End a hold still open (no zone write came: 6.1, a refusal, onlined already): events pass again."""
        with self.lock:
            if (blocks.start, blocks.stop) in self.held and self.held[(blocks.start, blocks.stop)] is None:
                del self.held[(blocks.start, blocks.stop)]

    def drops(self, action: Action, index: int, synthetic: bool, seqnum: int | None, dax: bool) -> bool:
        """Whether a memory uevent must not reach the engine; an ``offline`` of a dax block retires it."""
        with self.lock:
            for (first, end), upto in self.held.items():
                if first <= index < end and (upto is None or seqnum is None or seqnum <= upto):
                    return True
            if action is Action.OFFLINE and dax:
                self.retired.add(index)
            elif action is Action.ADD and index in self.retired:
                if synthetic:
                    return True  # a replay of a block going away: not news
                self.retired.discard(index)  # the kernel added it afresh
            return False

    def whole(self, index: int) -> bool:
        """Whether ``index`` belongs to a device onlined whole: its fresh ``add`` comes with it online."""
        with self.lock:
            return any(first <= index < end and upto is not None for (first, end), upto in self.held.items())

    def keep(self, blocks: list[Block]) -> list[Block]:
        """A scan's blocks without the offline ones hotplugd must leave alone (held or retired)."""
        with self.lock:
            if not self.held and not self.retired:
                return blocks
            return [b for b in blocks if b.state is not State.OFFLINE or not self._quiet(b.index)]

    def _quiet(self, index: int) -> bool:
        return index in self.retired or any(first <= index < end for first, end in self.held)


def uevent_seqnum(sysfs: Sysfs) -> int | None:
    """The last sequence number the kernel gave a uevent (``/sys/kernel/uevent_seqnum``); None: unknown."""
    try:
        return int(sysfs.attr(sysfs.root / "kernel/uevent_seqnum"))
    except (OSError, ValueError):
        return None


def online_whole(sysfs: Sysfs, dev: DaxDevice, zone: ZoneRequest, quiet: Quiet) -> str | None:
    """Online ``dev`` (bound to kmem, with ``state``) whole into ``zone``; None when done, else why not.

    ``quiet`` holds its blocks already (the caller held them before binding); they are released
    up to the uevents of everything before the zone write.
    """
    blocks = dev.blocks(sysfs.block_size)
    path = dev.path / "state"
    state = dev.state
    try:
        if state in ONLINE_STATES:
            return None  # onlined already (the kernel's auto-online at probe, or someone before us)
        if state != "unplugged":  # "offline": the probe added them offline; onlining starts from unplugged
            quiet.hold(blocks)
            sysfs.io.write(path, "unplugged")
        quiet.up_to(blocks, uevent_seqnum(sysfs))
        sysfs.io.write(path, str(zone))
    except OSError as exc:
        quiet.up_to(blocks, uevent_seqnum(sysfs))
        code = errno.errorcode.get(exc.errno or 0, str(exc.errno))
        return f"writing {path.name} of {dev.name} ({state} -> {zone}) failed: {code} ({exc.strerror})"
    return None


def whole_device(dev: DaxDevice) -> bool:
    """Whether ``dev`` is onlined through its ``state`` (bound to kmem on a kernel that has it)."""
    return dev.driver == KMEM and dev.state is not None
