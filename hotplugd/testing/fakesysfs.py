"""A fake sysfs and procfs tree under a temp dir, with a kernel that answers ``state`` writes.

For backends that read a Linux host (the ``sysfs`` plugin and any plugin that
reuses its layout)::

    fake = FakeSysfs(tmp_path, nodes={0: "0-3", 1: "4-7"})
    fake.add_blocks(range(64, 72), node=1)        # hot-added, offline
    backend = SysfsBackend.from_options(fake.options(), io=fake.io)
    fake.fail(65, errno.EBUSY)                     # next write to memory65 fails once
    backend.feed(fake.uevent("add", 64))           # the kernel's raw bytes

Writes go through :class:`FakeSysfsIO`, which does what ``state_store`` does:
an ``online*`` write to an offline block sets ``state`` to ``online`` and
``valid_zones`` to the zone joined; a write to an online block fails with
EINVAL; a write to a removed block with ENOENT. Nothing is ever written
outside the tree.
"""

from __future__ import annotations

import errno
import os
import shutil
from collections import defaultdict, deque
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

__all__ = ["FakeSysfs", "FakeSysfsIO"]

_ONLINE_ZONES = {"online_kernel": "Normal", "online_movable": "Movable"}
_ONLINE_TYPES = ("online", "online_kernel", "online_movable")


def _encode(action: str, devpath: str, env: dict[str, str]) -> bytes:
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

    def lexists(self, path: str | Path) -> bool:
        return os.path.lexists(path)

    def writable(self, path: Path) -> bool:
        return self.fake.writable

    def write(self, path: Path, value: str) -> None:
        path = Path(path)
        if not path.is_relative_to(self.fake.base):
            raise AssertionError(f"write outside the fake tree: {path}")  # never touch the real /sys
        index = self.fake.index_of(path)
        if index is None:
            path.write_text(value)
            return
        self.fake.writes.append((index, value))
        for hook in list(self.fake.before_write):
            hook(index, value)
        queued = self.fake.errors.get(index)
        if queued:
            code = queued.popleft()
            raise OSError(code, os.strerror(code), str(path))
        self.fake.kernel_state_store(index, value.strip())


class FakeSysfs:
    """The tree: ``<base>/sys/devices/system/{memory,node}``, ``<base>/sys/module/memory_hotplug``,
    ``<base>/proc/{meminfo,cmdline}`` and the three udev rules directories under ``<base>``."""

    def __init__(self, base: Path, *, block_size: int = 128 << 20, nodes: dict[int, str] | None = None,
                 mem_available: int = 16 << 30, auto_online_blocks: str = "offline",
                 cmdline: str = "BOOT_IMAGE=/vmlinuz root=/dev/vda ro") -> None:
        self.base = Path(base)
        self.sys = self.base / "sys"
        self.proc = self.base / "proc"
        self.memory = self.sys / "devices/system/memory"
        self.node = self.sys / "devices/system/node"
        self.params = self.sys / "module/memory_hotplug/parameters"
        self.udev_dirs = [self.base / d for d in ("etc/udev/rules.d", "run/udev/rules.d", "usr/lib/udev/rules.d")]
        self.block_size = block_size
        self.io = FakeSysfsIO(self)
        self.writes: list[tuple[int, str]] = []
        self.reads = 0
        self.errors: dict[int, deque[int]] = defaultdict(deque)
        self.before_write: list[Callable[[int, str], None]] = []
        self.before_listdir: list[Callable[[Path], None]] = []
        self.kernel_events: list[bytes] = []  # what the kernel broadcast (online events)
        self.writable = True
        self._seqnum = 1000
        for directory in (self.memory, self.node, self.params, self.proc, *self.udev_dirs):
            directory.mkdir(parents=True, exist_ok=True)
        (self.memory / "block_size_bytes").write_text(f"{block_size:x}\n")
        self.set_auto_online(auto_online_blocks)
        for node, cpus in (nodes or {0: "0-3"}).items():
            self.add_node(node, cpus)
        self.set_mem_available(mem_available)
        self.set_cmdline(cmdline)
        for name, value in (("online_policy", "contig-zones"), ("auto_movable_ratio", "301"),
                            ("memmap_on_memory", "N")):
            self.set_param(name, value)

    def __repr__(self) -> str:
        return f"<FakeSysfs {self.base} blocks={len(self.indices())} writes={len(self.writes)}>"

    # -- building the tree ----------------------------------------------------------

    def options(self, **overrides: Any) -> dict[str, Any]:
        """The ``[plugins.sysfs]`` table pointing at this tree, without netlink (feed events instead)."""
        table: dict[str, Any] = {"root": str(self.sys), "proc": str(self.proc),
                                 "udev_rules_dirs": [str(d) for d in self.udev_dirs], "netlink": False}
        table.update(overrides)
        return table

    def add_node(self, node: int, cpulist: str = "") -> None:
        (self.node / f"node{node}").mkdir(exist_ok=True)
        (self.node / f"node{node}" / "cpulist").write_text(cpulist + "\n")

    def add_block(self, index: int, node: int = 0, state: str = "offline",
                  zones: Iterable[str] = ("Normal", "Movable"), registered: bool = True) -> Path:
        """A present block (offline by default: as a hot-add leaves it).

        ``registered=False``: announced but not yet linked to its node, as the
        kernel leaves a block between its ``add`` uevent and node registration.
        """
        directory = self.memory / f"memory{index}"
        directory.mkdir()
        if registered:
            self.register(index, node)
        (directory / "state").write_text(state + "\n")
        (directory / "valid_zones").write_text(" ".join(zones) + "\n")
        (directory / "phys_index").write_text(f"{index:08x}\n")
        (directory / "removable").write_text("1\n")
        (directory / "uevent").write_text("")
        return directory

    def register(self, index: int, node: int = 0) -> None:
        """Link ``memoryN`` to its node (both ways), as the kernel does right after the ``add`` uevent."""
        if not (self.node / f"node{node}").exists():
            self.add_node(node)
        (self.memory / f"memory{index}" / f"node{node}").symlink_to(f"../../node/node{node}")
        (self.node / f"node{node}" / f"memory{index}").symlink_to(f"../../memory/memory{index}")

    def registered(self, directory: Path) -> bool:
        """Whether the block in ``directory`` has its ``nodeN`` link (always, without NUMA)."""
        return not self.node.exists() or any(p.name.startswith("node") for p in directory.iterdir())

    def add_blocks(self, indices: Iterable[int], node: int = 0, **kwargs: Any) -> list[int]:
        done = []
        for index in indices:
            self.add_block(index, node, **kwargs)
            done.append(index)
        return done

    def remove_block(self, index: int) -> None:
        for link in self.node.glob(f"node*/memory{index}"):
            link.unlink()
        shutil.rmtree(self.memory / f"memory{index}")

    def set_state(self, index: int, state: str, zones: Iterable[str] | None = None) -> None:
        """Change a block behind the backend's back (another onliner, the kernel)."""
        directory = self.memory / f"memory{index}"
        (directory / "state").write_text(state + "\n")
        if zones is not None:
            (directory / "valid_zones").write_text(" ".join(zones) + "\n")

    def set_auto_online(self, value: str) -> None:
        (self.memory / "auto_online_blocks").write_text(value + "\n")

    def set_mem_available(self, size: int) -> None:
        kb = size // 1024
        (self.proc / "meminfo").write_text(
            f"MemTotal:       {kb * 2} kB\nMemFree:        {kb} kB\nMemAvailable:   {kb} kB\nBuffers:        0 kB\n")

    def set_cmdline(self, text: str) -> None:
        (self.proc / "cmdline").write_text(text + "\n")

    def set_param(self, name: str, value: str) -> None:
        """A ``memory_hotplug`` module parameter."""
        (self.params / name).write_text(value + "\n")

    def add_udev_rule(self, name: str, text: str, where: str = "etc") -> Path:
        """A rules file in the ``etc``, ``run`` or ``usr/lib`` rules directory."""
        directory = {"etc": self.udev_dirs[0], "run": self.udev_dirs[1], "lib": self.udev_dirs[2]}[where]
        path = directory / name
        path.write_text(text)
        return path

    # -- reading it back ------------------------------------------------------------

    def indices(self) -> list[int]:
        return sorted(int(p.name[6:]) for p in self.memory.glob("memory[0-9]*"))

    def state(self, index: int) -> str:
        return (self.memory / f"memory{index}" / "state").read_text().strip()

    def valid_zones(self, index: int) -> tuple[str, ...]:
        return tuple((self.memory / f"memory{index}" / "valid_zones").read_text().split())

    def online_indices(self) -> set[int]:
        return {i for i in self.indices() if self.state(i) == "online"}

    def index_of(self, path: Path) -> int | None:
        """N when ``path`` is ``memoryN/state`` of this tree."""
        if path.name != "state" or path.parent.parent != self.memory or not path.parent.name.startswith("memory"):
            return None
        digits = path.parent.name[6:]
        return int(digits) if digits.isdigit() else None

    # -- the kernel -----------------------------------------------------------------

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
        return _encode(action, f"/devices/system/memory/memory{index}", env)

    def hot_add(self, indices: Iterable[int], node: int = 0) -> list[bytes]:
        """Add offline blocks and return their ``add`` uevents, in order."""
        return [self.uevent("add", i) for i in self.add_blocks(indices, node)]

    def kernel_state_store(self, index: int, value: str) -> None:
        """What ``state_store`` does with a write that got through (no injected error)."""
        directory = self.memory / f"memory{index}"
        if not directory.exists():
            raise OSError(errno.ENOENT, os.strerror(errno.ENOENT), str(directory / "state"))
        if value not in (*_ONLINE_TYPES, "offline"):
            raise OSError(errno.EINVAL, os.strerror(errno.EINVAL), str(directory / "state"))
        current = self.state(index)
        if value == "offline":
            if current == "offline":
                raise OSError(errno.EINVAL, os.strerror(errno.EINVAL), str(directory / "state"))
            self.set_state(index, "offline", ("Normal", "Movable"))
            self.kernel_events.append(self.uevent("offline", index))
            return
        if current == "online":
            raise OSError(errno.EINVAL, os.strerror(errno.EINVAL), str(directory / "state"))
        zones = self.valid_zones(index)
        zone = _ONLINE_ZONES.get(value) or (zones[0] if zones else "Normal")
        if zones and zone not in zones:
            raise OSError(errno.EINVAL, os.strerror(errno.EINVAL), str(directory / "state"))
        self.set_state(index, "online", (zone,))
        self.kernel_events.append(self.uevent("online", index))
