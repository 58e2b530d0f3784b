"""The file seam of :class:`~hotplugd_sysfs.testing.fakesysfs.FakeSysfs`, and what its kernel hands user space.

:class:`FakeSysfsIO` is what the sysfs backend's ``io`` does on a real host
(``read``, ``write``, ``listdir``, ``writable``...), done on the fake tree: a
write to ``memoryN/state`` goes to the fake kernel
(:mod:`hotplugd_sysfs.testing.fakehotplug`), after the errors queued for it
(:meth:`FakeSysfs.fail`); a write outside the tree is a test's bug, never a
write to this host's ``/sys``. :func:`oserror` is a syscall's failure and
:func:`encode` a uevent's datagram, as the kernel gives them (the dax bus,
:mod:`hotplugd_sysfs.testing.fakedax`, uses both).
"""

from __future__ import annotations

import errno
import os
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from hotplugd_sysfs.testing.fakesysfs import FakeSysfs

__all__ = ["FakeSysfsIO", "encode", "oserror"]


def oserror(code: int, path: object) -> OSError:
    """The error a syscall on ``path`` fails with."""
    return OSError(code, os.strerror(code), str(path))


def encode(action: str, devpath: str, env: dict[str, str]) -> bytes:
    """The datagram the kernel broadcasts: ``ACTION@DEVPATH``, then ``KEY=VALUE`` each, NUL-terminated."""
    items = {"ACTION": action, "DEVPATH": devpath, **env}
    return f"{action}@{devpath}".encode() + b"\0" + b"".join(f"{k}={v}".encode() + b"\0" for k, v in items.items())


class FakeSysfsIO:
    """The file seam of the sysfs backend (``read``/``write``/``listdir``/``writable``), playing the kernel."""

    def __init__(self, fake: FakeSysfs) -> None:
        self.fake = fake

    def read(self, path: Path) -> str:
        path = Path(path)
        self.fake.reads += 1
        if path.name == "valid_zones" and not self.fake.registered(path.parent):
            # 6.1's valid_zones_show() dereferences NODE_DATA(NUMA_NO_NODE) here: a kernel oops.
            raise AssertionError(f"read {path} before the block was linked to its node (kernel oops)")
        with open(path, encoding="ascii") as fh:
            return fh.read()

    def listdir(self, path: str | Path) -> list[str]:
        for hook in list(self.fake.before_listdir):
            hook(Path(path))
        return os.listdir(path)

    def read_bytes(self, path: Path) -> bytes:
        for hook in list(self.fake.before_read):
            hook(Path(path))
        with open(path, "rb") as fh:
            return fh.read()

    def readlink(self, path: Path) -> str:
        for hook in list(self.fake.before_read):
            hook(Path(path))
        return os.readlink(path)

    def lexists(self, path: str | Path) -> bool:
        return os.path.lexists(path)

    def writable(self, path: Path) -> bool:
        return self.fake.writable and Path(path) not in self.fake.read_only

    def write(self, path: Path, value: str) -> None:
        path = Path(path)
        if not path.is_relative_to(self.fake.base):
            raise AssertionError(f"write outside the fake tree: {path}")  # never touch the real /sys
        if path in self.fake.read_only:
            raise oserror(errno.EROFS, path)
        index = self.fake.index_of(path)
        if index is None:
            self.fake.store(path, value)
            return
        self.fake.writes.append((index, value))
        for hook in list(self.fake.before_write):
            hook(index, value)
        queued = self.fake.errors.get(index)
        if queued:
            code = queued.popleft()
            raise oserror(code, path)
        self.fake.kernel_state_store(index, value.strip())
