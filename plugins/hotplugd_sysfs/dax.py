"""DAX devices as one more source of the host's memory blocks (blocking: a worker thread calls these).

:class:`DaxHost` finds the devices on the dax bus (:mod:`.daxdevices`), converts
those a ``[[plugins.sysfs.dax]]`` rule names (:mod:`.daxrules`, :mod:`.daxconvert`)
at each scan (start, rescans) and on each ``bind`` uevent of the dax bus (a new
device bound to ``device_dax``), and knows which memory blocks the kmem driver made
of each device, so that every block the backend reports carries its
``Block.source`` (the core onlines those by ``[zones.dax]``).

The block ranges are re-read once per batch of uevents that adds blocks (one
``listdir`` of the bus, one ``readlink`` per device): the kmem driver's blocks are
announced before its ``bind`` uevent, so a cache refreshed only on that event would
miss them.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import structlog

from hotplugd import Block, State, ZoneRequest

from .daxconvert import Conversion, convert, refusal
from .daxdevices import DEVDAX, KMEM, DaxDevice, dax_dir, device_names, driver_of, read_device, read_devices
from .daxrules import DaxRule
from .daxstate import Quiet, online_whole, whole_device
from .sysfs import Sysfs
from .tiers import node_tiers

log = structlog.get_logger("hotplugd.sysfs")

__all__ = ["DaxHost", "DeviceRow"]


@dataclass(frozen=True, slots=True)
class DeviceRow:
    """One line of ``hotplugd status``'s devices table."""

    device: str
    mode: str  # devdax, system-ram, unbound (or another driver's name)
    node: int | None
    size: int
    tier: int | None  # the node's memory tier id; None where the kernel has no tiers
    named: bool  # a [[plugins.sysfs.dax]] rule names it (hotplugd converts it)
    state: str | None = None  # the 2026 ``state`` attribute, where the kernel has it


class DaxHost:
    """The dax devices of one sysfs root, the rules naming them, and the blocks kmem made of them."""

    def __init__(self, sysfs: Sysfs, proc: Path, rules: tuple[DaxRule, ...] = ()) -> None:
        self.sysfs = sysfs
        self.proc = Path(proc)
        self.rules = rules
        #: (first block, end block, device) of each device bound to kmem.
        self.ranges: tuple[tuple[int, int, str], ...] = ()
        #: Device -> why its last conversion failed (cleared once converted).
        self.failures: dict[str, str] = {}
        #: The ``[zones.dax]`` zone a device with the 2026 ``state`` attribute is onlined into, whole
        #: (None: auto-movable, or not set: its blocks are onlined one by one as on older kernels).
        self.zone: ZoneRequest | None = None
        #: Blocks whose uevents the backend drops, or that it never onlines again (:mod:`.daxstate`).
        self.quiet = Quiet()

    def __repr__(self) -> str:
        return f"<DaxHost rules={len(self.rules)} kmem={[r[2] for r in self.ranges]} failures={list(self.failures)}>"

    def rule_for(self, dev: DaxDevice) -> DaxRule | None:
        """The first rule naming ``dev``; None: hotplugd never touches it."""
        return next((r for r in self.rules if r.matches(dev, self.sysfs.root)), None)

    # -- converting -------------------------------------------------------------------

    def reconcile(self) -> list[Conversion]:
        """Convert every named device still in devdax mode (or unbound); then re-read the ranges.

        A dax bus that cannot be read (EACCES, EIO) is logged and skipped: it never fails the
        memory scan that calls this.
        """
        try:
            return self._reconcile()
        except OSError as exc:
            log.error("dax_bus_unreadable", path=exc.filename, errno=exc.errno, detail=exc.strerror)
            return []

    def _reconcile(self) -> list[Conversion]:
        devices = read_devices(self.sysfs)
        done = []
        for dev in devices:
            rule = self.rule_for(dev)
            if rule is None:
                continue
            if dev.driver == KMEM:
                self._online_whole(dev)  # converted before (by us, or someone): onlined whole where it can be
                continue
            if dev.driver not in (DEVDAX, ""):
                continue
            blocks = dev.blocks(self.sysfs.block_size)
            if self.zone is not None:
                self.quiet.hold(blocks)  # kmem's probe adds them: on a 2026 kernel they are onlined whole
            try:
                done.append(result := convert(self.sysfs, self.proc, dev, rule))
                if result.ok:
                    self.failures.pop(dev.name, None)
                    log.info("dax_converted", device=dev.name, node=dev.target_node, size=dev.size,
                             rule=rule.describe())
                    if (bound := read_device(self.sysfs, dev.name)) is not None:
                        self._online_whole(bound)
                else:
                    self.failures[dev.name] = result.detail
                    uninspected = [{"pid": u.pid, "uid": u.uid, "comm": u.comm, "file": u.what,
                                    "errno": u.errno} for u in result.uninspected]
                    log.error("dax_not_converted", device=dev.name, detail=result.detail, errno=result.errno,
                              **({"uninspected": uninspected} if uninspected else {}))
            finally:
                self.quiet.settle(blocks)  # no state write (6.1, refused, onlined at probe): events pass again
        self.refresh(read_devices(self.sysfs) if done else devices)
        return done

    def _online_whole(self, dev: DaxDevice) -> None:
        """A named device bound to kmem, on a kernel with ``state``: unplugged then onlined into the zone.

        Only while none of its blocks is online (left ``offline`` by the probe, or ``unplugged``):
        a device whose blocks were onlined one by one stays with the engine.
        """
        if self.zone is None or not whole_device(dev) or dev.state not in ("offline", "unplugged"):
            return
        blocks = dev.blocks(self.sysfs.block_size)
        if dev.state == "offline" and any(self.sysfs.block_state(i) is not State.OFFLINE for i in blocks
                                          if self.sysfs.io.lexists(self.sysfs.block_dir(i))):
            return  # onlined block by block already (partly): the engine has the rest
        try:
            why = online_whole(self.sysfs, dev, self.zone, self.quiet)
        finally:
            self.quiet.settle(blocks)
        if why is None:
            self.failures.pop(dev.name, None)
            log.info("dax_onlined_whole", device=dev.name, node=dev.target_node, zone=str(self.zone),
                     blocks=len(blocks), was=dev.state)
        else:
            self.failures[dev.name] = why
            log.error("dax_not_onlined", device=dev.name, detail=why)

    # -- block sources ----------------------------------------------------------------

    def refresh(self, devices: list[DaxDevice] | None = None) -> None:
        """Re-read which blocks each kmem-bound device holds.

        Without ``devices``: one ``listdir`` of the bus and one ``readlink`` per device,
        attributes read only for a device newly bound to kmem (a bound device's range
        does not change): cheap enough for each batch of uevents that adds blocks. A bus
        that cannot be read keeps the ranges known (logged): the events go on.
        """
        try:
            self._refresh(devices)
        except OSError as exc:
            log.error("dax_bus_unreadable", path=exc.filename, errno=exc.errno, detail=exc.strerror)

    def _refresh(self, devices: list[DaxDevice] | None) -> None:
        bs = self.sysfs.block_size
        if devices is None:
            known = {name: (first, end) for first, end, name in self.ranges}
            found = []
            for name in device_names(self.sysfs):
                if driver_of(dax_dir(self.sysfs) / name) != KMEM:
                    continue
                if name in known:
                    found.append((*known[name], name))
                elif (dev := read_device(self.sysfs, name)) is not None and (r := dev.blocks(bs)):
                    found.append((r.start, r.stop, name))
            self.ranges = tuple(found)
            return
        self.ranges = tuple((r.start, r.stop, d.name) for d in devices if d.driver == KMEM
                            for r in (d.blocks(bs),) if r)

    def source_of(self, index: int) -> str:
        """The dax device whose memory block ``index`` is; "" for any other block."""
        for first, end, name in self.ranges:
            if first <= index < end:
                return name
        return ""

    def label(self, blocks: list[Block]) -> list[Block]:
        """``blocks`` with their ``source`` set (the same list when no device is bound to kmem)."""
        if not self.ranges:
            return blocks
        return [replace(b, source=s) if (s := self.source_of(b.index)) != b.source else b for b in blocks]

    # -- what the plan, check and status see ---------------------------------------------

    def sources(self) -> list[str]:
        """What ``[zones.dax]`` governs: the devices a rule names or kmem holds already, and each rule
        that names no present device yet (described, ``device='dax0.0'``): its device may come any time."""
        devices = read_devices(self.sysfs)
        named = [d.name for d in devices if d.driver == KMEM or self.rule_for(d) is not None]
        waiting = [r.describe() for r in self.rules if not any(r.matches(d, self.sysfs.root) for d in devices)]
        return named + waiting

    def conflicts(self) -> list[str]:
        """Named devices that will not (or did not) convert, one message each (read only)."""
        out = []
        for dev in read_devices(self.sysfs):
            if self.rule_for(dev) is None:
                continue
            if dev.driver == KMEM:
                if dev.name in self.failures:  # converted, but its state write failed
                    out.append(f"dax device {dev.name} (node {dev.target_node}) could not be onlined whole: "
                               f"{self.failures[dev.name]}; its state is {dev.state}")
                continue
            if dev.driver not in (DEVDAX, ""):
                continue
            why = self.failures.get(dev.name) or refusal(self.sysfs, self.proc, dev)
            if why:
                out.append(f"dax device {dev.name} (node {dev.target_node}) is named by plugins.sysfs.dax "
                           f"but cannot be converted to system-ram: {why}; it is left in {dev.mode} mode")
        return out

    def rows(self) -> list[DeviceRow]:
        """The devices table of ``hotplugd status``: device, mode, node, size, the node's tier."""
        tiers = node_tiers(self.sysfs)
        return [DeviceRow(d.name, d.mode, d.target_node, d.size,
                          None if d.target_node is None else tiers.get(d.target_node),
                          self.rule_for(d) is not None, d.state)
                for d in read_devices(self.sysfs)]
