"""Turn one dax device into system RAM, as ``daxctl reconfigure-device --mode=system-ram --no-online`` does.

The sequence is libdaxctl's (ndctl ``daxctl/lib/libdaxctl.c``): ``daxctl_dev_disable``
writes the device's name to ``<dev>/driver/remove_id`` then ``<dev>/driver/unbind`` and
checks that the ``driver`` link is gone (EBUSY otherwise); ``daxctl_dev_enable_ram``
writes it to ``bus/dax/drivers/kmem/new_id`` then ``.../kmem/bind`` and judges by the
``driver`` link alone (``new_id`` may bind already, ``bind`` then says ENODEV). The kmem
driver's probe adds the device's memory blocks, offline, each with its ``add`` uevent;
onlining them is the engine's, by the ``[zones.dax]`` policy.

Unlike daxctl it never loads a module (the kmem driver must be there) and it leaves
a device that cannot be converted as it was: mapped or open by a process, or possibly
so because a process could not be inspected (:mod:`.daxusers`; converting would pull
the memory from under it), ``memmap_on_memory`` refused, unbind refused,
or kmem's probe refused (EBUSY, ENXIO): then the device is bound back to
``device_dax``. Nothing is ever converted back to devdax here.
"""

from __future__ import annotations

import errno
from dataclasses import dataclass
from pathlib import Path

from .daxdevices import DEVDAX, KMEM, DaxDevice, driver_of
from .daxrules import DaxRule
from .daxusers import Uninspected, device_users
from .sysfs import Sysfs

__all__ = ["Conversion", "convert", "refusal"]


@dataclass(frozen=True, slots=True)
class Conversion:
    """How one device's conversion ended: ``ok`` (bound to kmem), else why it is left as it was."""

    device: str
    ok: bool
    detail: str = ""
    errno: int | None = None
    #: Processes whose maps or fds could not be read: the device may be in use (fail closed).
    uninspected: tuple[Uninspected, ...] = ()

    def __repr__(self) -> str:
        return f"<Conversion {self.device} {'ok' if self.ok else 'refused'} {self.detail}>"


class Refused(Exception):
    def __init__(self, detail: str, code: int | None = None) -> None:
        super().__init__(detail)
        self.detail = detail
        self.code = code


def _why(exc: OSError) -> str:
    code = exc.errno or 0
    return f"{errno.errorcode.get(code, str(code))} ({exc.strerror or exc})"


def drivers_dir(sysfs: Sysfs) -> Path:
    return sysfs.root / "bus/dax/drivers"


def refusal(sysfs: Sysfs, proc: Path, dev: DaxDevice) -> str | None:
    """Why ``dev`` cannot be converted now, known before touching it (None: try)."""
    return _refused(sysfs, proc, dev).detail or None


def _refused(sysfs: Sysfs, proc: Path, dev: DaxDevice) -> Conversion:
    """``refusal`` as a Conversion (``detail`` "" when nothing stands in the way), with the processes
    that could not be inspected: a device is converted only when nobody is proven to use it."""
    if dev.driver not in (DEVDAX, ""):
        return Conversion(dev.name, False, f"it is bound to {dev.driver!r}, not device_dax")
    if not sysfs.io.lexists(drivers_dir(sysfs) / KMEM):
        return Conversion(dev.name, False, "the kmem driver is not loaded (modprobe kmem; hotplugd loads no module)")
    users = device_users(sysfs.io, proc, dev.name)
    return Conversion(dev.name, False, users.describe() or "", uninspected=users.uninspected)


def convert(sysfs: Sysfs, proc: Path, dev: DaxDevice, rule: DaxRule) -> Conversion:
    """Bind ``dev`` to kmem (blocking). Never raises for a kernel refusal: the Conversion says it."""
    refused = _refused(sysfs, proc, dev)
    if refused.detail:
        return refused
    try:
        _set_memmap(sysfs, dev, rule)
        if dev.driver == DEVDAX:
            _disable(sysfs, dev)
    except Refused as exc:
        return Conversion(dev.name, False, exc.detail, exc.code)
    return _enable_ram(sysfs, dev)


def _write(sysfs: Sysfs, path: Path, value: str) -> None:
    sysfs.io.write(path, value)


def _set_memmap(sysfs: Sysfs, dev: DaxDevice, rule: DaxRule) -> None:
    """The device's ``memmap_on_memory`` as the rule wants, where the kernel has it (6.8+)."""
    if rule.memmap_on_memory is None or dev.memmap_on_memory is None or rule.memmap_on_memory == dev.memmap_on_memory:
        return
    try:
        _write(sysfs, dev.path / "memmap_on_memory", "1" if rule.memmap_on_memory else "0")
    except OSError as exc:
        raise Refused(f"memmap_on_memory={int(rule.memmap_on_memory)} refused: {_why(exc)}", exc.errno) from None


def _disable(sysfs: Sysfs, dev: DaxDevice) -> None:
    """``daxctl_dev_disable``: remove_id then unbind through the bound driver; the link must be gone."""
    driver = dev.path / "driver"
    try:
        _write(sysfs, driver / "remove_id", dev.name)
        _write(sysfs, driver / "unbind", dev.name)
    except OSError as exc:
        raise Refused(f"unbinding it from device_dax failed: {_why(exc)}", exc.errno) from None
    if sysfs.io.lexists(driver):
        raise Refused("it is still bound to device_dax after unbind (busy)", errno.EBUSY)


def _enable_ram(sysfs: Sysfs, dev: DaxDevice) -> Conversion:
    """``daxctl_dev_enable_ram``: new_id then bind at kmem; on failure bind device_dax back."""
    kmem = drivers_dir(sysfs) / KMEM
    failures: list[OSError] = []
    for attr in ("new_id", "bind"):
        try:
            _write(sysfs, kmem / attr, dev.name)
        except OSError as exc:
            failures.append(exc)
    if driver_of(dev.path) == KMEM:
        return Conversion(dev.name, True, "bound to kmem")
    code = next((e.errno for e in reversed(failures) if e.errno != errno.ENODEV), None) or (
        failures[-1].errno if failures else errno.ENXIO)
    detail = f"kmem refused it: {_why(failures[-1]) if failures else 'not bound after bind'}"
    return Conversion(dev.name, False, detail + _restore(sysfs, dev), code)


def _restore(sysfs: Sysfs, dev: DaxDevice) -> str:
    """Undo the attempt: kmem forgets the id, device_dax takes the device back if it had it."""
    drivers = drivers_dir(sysfs)
    try:
        _write(sysfs, drivers / KMEM / "remove_id", dev.name)
        if dev.driver == DEVDAX and driver_of(dev.path) == "":
            _write(sysfs, drivers / DEVDAX / "bind", dev.name)
    except OSError as exc:
        return f"; restoring device_dax failed: {_why(exc)}"
    return "; left in devdax mode" if dev.driver == DEVDAX else "; left unbound"
