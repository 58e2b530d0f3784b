"""The dax bus as sysfs shows it: ``<root>/bus/dax/devices/daxX.Y`` (blocking: call from a worker thread).

A dax device is memory the kernel does not manage yet: pmem (an NVDIMM
namespace in ``devdax`` mode), a CXL memory expander's region, soft-reserved
memory (``dax_hmem``). Bound to ``device_dax`` it is a character device
(``/dev/daxX.Y``) that applications map; bound to ``kmem`` its range becomes
memory blocks on the device's ``target_node`` (``daxctl reconfigure-device
--mode=system-ram``). Each device directory has ``target_node``, ``size``,
``resource`` (hex start), ``align``, ``mappingN/{start,end}`` (6.x), the
``driver`` link, ``memmap_on_memory`` (6.8 and later) and, on 2026 kernels,
``state``; what a kernel lacks reads as None. The namespace UUID is the one ``ndctl
list`` shows, where the device comes from an nd namespace (its parent, an ``nd_dax``).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from .formats import is_gone
from .sysfs import Sysfs

__all__ = ["DEVDAX", "KMEM", "DaxDevice", "dax_dir", "device_names", "driver_of", "read_device",
           "read_devices"]

#: The two drivers of the dax bus that matter here: a character device, or system RAM.
DEVDAX = "device_dax"
KMEM = "kmem"
_DEVICE = re.compile(r"dax\d+\.\d+")
#: The mode names daxctl prints, by driver.
MODES = {DEVDAX: "devdax", KMEM: "system-ram", "": "unbound"}


@dataclass(frozen=True, slots=True)
class DaxDevice:
    """One ``daxX.Y`` as read. ``ranges``: its physical ranges, end exclusive."""

    name: str
    path: Path
    target_node: int | None
    size: int
    ranges: tuple[tuple[int, int], ...]
    align: int | None = None
    driver: str = ""  # "device_dax", "kmem", another driver's name, or "" (unbound)
    namespace_uuid: str | None = None
    memmap_on_memory: bool | None = None  # None: this kernel has no per-device memmap_on_memory (before 6.8)
    state: str | None = None  # the 2026 attribute (unplugged, online, online_kernel, online_movable); None: absent

    @property
    def mode(self) -> str:
        """``devdax``, ``system-ram``, ``unbound``, or the driver's own name."""
        return MODES.get(self.driver, self.driver)

    @property
    def start(self) -> int | None:
        return self.ranges[0][0] if self.ranges else None

    def blocks(self, block_size: int) -> range:
        """The memory blocks the kmem driver makes of it: those wholly inside its first to last range.

        kmem aligns each range inwards to the memory block size (``dax_kmem_range``).
        """
        if not self.ranges:
            return range(0)
        first = -(-min(s for s, _ in self.ranges) // block_size)
        last = max(e for _, e in self.ranges) // block_size
        return range(first, max(first, last))

    def __repr__(self) -> str:
        return f"<DaxDevice {self.name} [{self.mode}] node{self.target_node} {self.size >> 20} MiB>"


def dax_dir(sysfs: Sysfs) -> Path:
    return sysfs.root / "bus/dax/devices"


def device_names(sysfs: Sysfs) -> list[str]:
    """The devices on the dax bus, sorted; [] when the kernel has no dax bus."""
    try:
        names = sysfs.io.listdir(dax_dir(sysfs))
    except FileNotFoundError:
        return []
    return sorted(n for n in names if _DEVICE.fullmatch(n))


def read_devices(sysfs: Sysfs) -> list[DaxDevice]:
    """Every dax device on the bus, by name; [] when the kernel has no dax bus."""
    found = (read_device(sysfs, name) for name in device_names(sysfs))
    return [d for d in found if d is not None]


def read_device(sysfs: Sysfs, name: str) -> DaxDevice | None:
    """``daxX.Y`` as sysfs shows it now; None when it is gone (or not a device of the bus)."""
    path = dax_dir(sysfs) / name
    try:
        size = _int(sysfs.attr(path / "size"))
        resource = _optional(sysfs, path / "resource")
        ranges = _mappings(sysfs, path)
        if not ranges and resource:
            ranges = ((_int(resource), _int(resource) + size),)
        node = _optional(sysfs, path / "target_node")
        align = _optional(sysfs, path / "align")
        memmap = _optional(sysfs, path / "memmap_on_memory")
        return DaxDevice(
            name=name, path=path, target_node=None if node in (None, "-1") else int(node), size=size,
            ranges=ranges, align=_int(align) if align else None, driver=driver_of(path),
            namespace_uuid=_namespace_uuid(sysfs, path),
            memmap_on_memory=None if memmap is None else memmap in ("1", "Y", "y"),
            state=_optional(sysfs, path / "state"))
    except OSError as exc:
        if is_gone(exc):
            return None
        raise


def _int(text: str) -> int:
    """sysfs numbers: decimal, or hex with ``0x``."""
    return int(text, 0)


def _optional(sysfs: Sysfs, path: Path) -> str | None:
    """An attribute some kernels lack (ENOENT) or refuse to show (EINVAL, EOPNOTSUPP): None then."""
    try:
        return sysfs.attr(path)
    except FileNotFoundError:
        return None
    except OSError as exc:
        if exc.errno in (22, 95):  # EINVAL, EOPNOTSUPP
            return None
        raise


def _mappings(sysfs: Sysfs, path: Path) -> tuple[tuple[int, int], ...]:
    """``mappingN/{start,end}`` (end inclusive in sysfs), as end-exclusive ranges; () before 5.10."""
    found = []
    index = 0
    while True:
        start = _optional(sysfs, path / f"mapping{index}" / "start")
        end = _optional(sysfs, path / f"mapping{index}" / "end")
        if start is None or end is None:
            return tuple(sorted(found))
        found.append((_int(start), _int(end) + 1))
        index += 1


def driver_of(path: Path) -> str:
    """The name of the driver ``path`` (a device directory) is bound to; "" when unbound."""
    try:
        return os.path.basename(os.readlink(path / "driver"))
    except FileNotFoundError:
        return ""


def _namespace_uuid(sysfs: Sysfs, path: Path) -> str | None:
    """The UUID ``ndctl list`` shows for the namespace behind the device, where there is one.

    The device's parent is the nd_dax that claims the namespace: its ``uuid`` is what
    ``ndctl list`` prints as a devdax namespace's ``uuid``; a namespace without one
    (label-less NVDIMMs) falls back to the claimed namespace's own ``uuid`` (``raw_uuid``).
    """
    parent = Path(os.path.realpath(path)).parent
    own = _optional(sysfs, parent / "uuid")
    if own:
        return own
    namespace = _optional(sysfs, parent / "namespace")
    if not namespace:
        return None
    return _optional(sysfs, parent.parent / namespace / "uuid")

