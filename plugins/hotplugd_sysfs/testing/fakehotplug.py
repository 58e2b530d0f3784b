"""The fake kernel's memory hotplug on a :class:`~hotplugd_sysfs.testing.fakesysfs.FakeSysfs` tree.

:class:`KernelHotplug` is the part of :class:`FakeSysfs` that plays the kernel
(the tree's files are the rest): a hot-add (:meth:`KernelHotplug.hot_add`: the
blocks and their ``add`` uevents, then the kernel's own onlines while
``auto_online_blocks`` is not ``offline``), what ``state_store`` does with a
write to ``memoryN/state`` and a write to ``memoryN/online``, a knob write, the
seed's deferred onlining and its final phase
(:meth:`KernelHotplug.finish_deferred`), errors injected into the next writes
(:meth:`KernelHotplug.fail`) and the uevents it broadcasts. What it decides
(knob values, the zone of an online, whether an online is deferred) is
:mod:`hotplugd_sysfs.testing.fakekernel`'s.
"""

from __future__ import annotations

import contextlib
import errno
from collections import deque
from collections.abc import Callable, Iterable
from pathlib import Path

from hotplugd_sysfs.testing.fakeio import encode, oserror
from hotplugd_sysfs.testing.fakekernel import KNOB_DEFAULTS, knob_value, online_zone, populated

__all__ = ["ONLINE_TYPES", "KernelHotplug"]

#: What a write to ``memoryN/state`` may say besides ``offline``.
ONLINE_TYPES = ("online", "online_kernel", "online_movable")


class KernelHotplug:
    """The kernel of a :class:`~hotplugd_sysfs.testing.fakesysfs.FakeSysfs`, a base of it: the tree is ``self``
    (its files: ``add_blocks``, ``set_state``, ``set_half_online``, ``knob``, ``state``, ``block``...)."""

    memory: Path
    errors: dict[int, deque[int]]
    store_hooks: list[Callable[[Path, str], bool]]
    kernel_events: list[bytes]
    knob_writes: list[tuple[str, str]]
    deferred: dict[int, tuple[int, str]]
    _seqnum: int

    def fail(self, index: int, *codes: int) -> None:
        """The next writes to ``memoryN/state`` fail with these errnos, one each, in order."""
        self.errors[index].extend(codes)

    def uevent(self, action: str, index: int, *, synthetic: bool = False, seqnum: int | None = None) -> bytes:
        """The datagram the kernel broadcasts for ``memoryN`` (``SYNTH_UUID=0`` when synthetic)."""
        if seqnum is None:
            self._seqnum += 1
            seqnum = self._seqnum
        env = {"SUBSYSTEM": "memory", "SEQNUM": str(seqnum)}
        if synthetic:
            env["SYNTH_UUID"] = "0"
        return encode(action, f"/devices/system/memory/memory{index}", env)

    def hot_add(self, indices: Iterable[int], node: int = 0, *, left_offline: Iterable[int] = (),
                zones: Iterable[str] = ("Normal", "Movable")) -> list[bytes]:
        """Add offline blocks, as one ``add_memory()``: their ``add`` uevents, in order, then the kernel's own onlines.

        While ``auto_online_blocks`` is not ``offline`` the kernel onlines each block
        (or holds it half-online, on the seed's kernel) and its ``online`` uevent
        follows the adds. A block in ``left_offline``, or whose zone is not valid,
        stays offline: a failed auto-online, a block the kernel left to user space.
        ``zones``: each block's ``valid_zones`` while offline.
        """
        added = self.add_blocks(indices, node, zones=tuple(zones))
        events = [self.uevent("add", i) for i in added]
        mode = self.knob("auto_online_blocks") or "offline"
        if mode != "offline":
            skip = set(left_offline)
            for index in added:
                if index not in skip:
                    with contextlib.suppress(OSError):  # online_memory_block() failed: the block stays offline
                        events.append(self.kernel_online(index, mode))
        return events

    def finish_deferred(self) -> list[int]:
        """The seed's kernel's final phase: each half-online block's ``state`` reads online. No uevent.

        Like ``deferred_online_memory()``, it does nothing while ``auto_online_blocks``
        reads ``offline``. The blocks finished, ascending.
        """
        if (self.knob("auto_online_blocks") or "offline") == "offline":
            return []
        done = sorted(self.deferred)
        for index in done:
            _, zone = self.deferred[index]
            self.set_state(index, "online", (zone,))
        return done

    def store(self, path: Path, value: str) -> None:
        """A write to a file other than ``memoryN/state``: a knob, ``memoryN/online``, anything else."""
        name = next((n for n in KNOB_DEFAULTS if self.knob_file(n) == path), None)
        if name is not None:
            if not path.exists():  # a parameter this kernel lacks
                raise oserror(errno.ENOENT, path)
            try:
                stored = knob_value(name, value)
            except ValueError:
                raise oserror(errno.EINVAL, path) from None
            self.knob_writes.append((name, value))
            path.write_text(stored + "\n")
        elif path.name == "online" and path.parent.parent == self.memory:
            self.kernel_online_store(int(path.parent.name[6:]), value.strip())
        elif not any(hook(path, value) for hook in self.store_hooks):
            path.write_text(value)

    def kernel_state_store(self, index: int, value: str) -> None:
        """What ``state_store`` does with a write that got through (no injected error)."""
        directory = self.memory / f"memory{index}"
        if not directory.exists():
            raise oserror(errno.ENOENT, directory / "state")
        if value not in (*ONLINE_TYPES, "offline"):
            raise oserror(errno.EINVAL, directory / "state")
        current = self.state(index)
        if value == "offline":
            if current == "offline":
                raise oserror(errno.EINVAL, directory / "state")
            self.set_state(index, "offline", ("Normal", "Movable"))
            self.kernel_events.append(self.uevent("offline", index))
            return
        if current == "online" or index in self.deferred:  # device_online(): online already
            raise oserror(errno.EINVAL, directory / "state")
        self.kernel_online(index, value)

    def kernel_online_store(self, index: int, value: str) -> None:
        """What a write to ``memoryN/online`` does: 1 onlines (a plain ``online``), 0 offlines.

        Already there: success, no change (a half-online block takes 1 so). 0 to a
        half-online block: EBUSY (the seed's kernel's answer is not known).
        """
        path = self.memory / f"memory{index}" / "online"
        if value not in ("0", "1"):
            raise oserror(errno.EINVAL, path)
        if value == self.online_flag(index):
            return
        if index in self.deferred:
            raise oserror(errno.EBUSY, path)
        if value == "1":
            self.kernel_online(index, "online")
        else:
            self.kernel_state_store(index, "offline")

    def kernel_online(self, index: int, online_type: str) -> bytes:
        """``online_pages()`` of an offline block: the zone the knobs pick, or half-online on the seed's kernel.

        EINVAL when the zone is not one ``valid_zones`` lists. Returns (and
        records in ``kernel_events``) the ``online`` uevent.
        """
        block = self.block(index)
        knobs = self._knobs() if online_type == "online" else {}
        zone = online_zone(online_type, knobs, block, self.online_blocks())
        if block.valid_zones and zone not in block.valid_zones:
            raise oserror(errno.EINVAL, self.memory / f"memory{index}" / "state")
        ratio = self.knob("parallel_hotplug_ratio")
        if ratio not in (None, "0") and populated(zone, block.node, self.online_blocks(), self.deferred):
            self.set_half_online(index, zone)
        else:
            self.set_state(index, "online", (zone,))
        event = self.uevent("online", index)
        self.kernel_events.append(event)
        return event

    def _knobs(self) -> dict[str, str]:
        """The knobs a plain ``online`` consults (explicit zones need none)."""
        return {name: value for name in ("online_policy", "auto_movable_ratio", "auto_movable_numa_aware")
                if (value := self.knob(name)) is not None}
