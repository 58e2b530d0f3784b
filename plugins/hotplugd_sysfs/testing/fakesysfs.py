"""A fake sysfs and procfs tree under a temp dir, with a kernel that answers ``state`` writes.

For backends that read a Linux host (the ``sysfs`` plugin and any plugin that
reuses its layout)::

    fake = FakeSysfs(tmp_path, nodes={0: "0-3", 1: "4-7"})
    fake.add_blocks(range(64, 72), node=1)        # hot-added, offline
    backend = SysfsBackend.from_options(fake.options(), io=fake.io)
    fake.fail(65, errno.EBUSY)                     # next write to memory65 fails once
    backend.feed(fake.uevent("add", 64))           # the kernel's raw bytes

Writes go through :class:`FakeSysfsIO` (:mod:`hotplugd_sysfs.testing.fakeio`) to
the fake kernel, :class:`~hotplugd_sysfs.testing.fakehotplug.KernelHotplug` (a
base of :class:`FakeSysfs`: this module is the tree's files, that one the
kernel), which does what ``state_store`` does: an ``online*`` write to an
offline block sets ``state`` to ``online`` and ``valid_zones`` to the zone
joined; a write to an online block fails with EINVAL; a write to a removed
block with ENOENT. Nothing is ever written outside the tree.

The kernel's onlining knobs are files too (``auto_online_blocks``, the
``memory_hotplug`` parameters; :meth:`FakeSysfs.set_read_only` makes some
unwritable, as a read-only /sys does), and the fake kernel follows them:

- while ``auto_online_blocks`` is not ``offline``, :meth:`FakeSysfs.hot_add`
  onlines the blocks itself into the zone the knobs say and returns their
  ``online`` uevents after the ``add`` ones (``left_offline`` keeps some
  offline, as a failed or lost auto-online does);
- the seed's kernel (``FakeSysfs(..., anolis=True)``: Anolis's
  ``parallel_hotplug_ratio``; ``docs/facts/ANOLIS.md``): with the ratio
  above 0, an online into a zone the node already has pages in leaves the
  block half-online (``state`` offline, ``online`` 1, its ``online`` uevent
  sent); :meth:`FakeSysfs.finish_deferred` plays the kernel's final phase
  (``state`` online, no uevent). Writing ``online`` to a half-online block's
  ``state`` fails with EINVAL; writing 1 to its ``online`` changes nothing.

Zones and knob values follow :mod:`hotplugd_sysfs.testing.fakekernel`.
"""

from __future__ import annotations

import shutil
from collections import defaultdict, deque
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from hotplugd import Block, State
from hotplugd_sysfs.testing.fakehotplug import KernelHotplug
from hotplugd_sysfs.testing.fakeio import FakeSysfsIO
from hotplugd_sysfs.testing.fakekernel import KNOB_DEFAULTS

__all__ = ["FakeSysfs", "FakeSysfsIO"]


class FakeSysfs(KernelHotplug):
    """The tree: ``<base>/sys/devices/system/{memory,node}``, ``<base>/sys/module/memory_hotplug``,
    ``<base>/proc/{meminfo,cmdline}`` and the three udev rules directories under ``<base>``."""

    def __init__(self, base: Path, *, block_size: int = 128 << 20, nodes: dict[int, str] | None = None,
                 mem_available: int = 16 << 30, auto_online_blocks: str = "offline",
                 cmdline: str = "BOOT_IMAGE=/vmlinuz root=/dev/vda ro", anolis: bool = False) -> None:
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
        self.before_read: list[Callable[[Path], None]] = []  # read_bytes and readlink (a denied /proc/PID file)
        #: Other parts of the fake kernel (:mod:`hotplugd_sysfs.testing.fakedax`): each takes a write it
        #: handles (True) or leaves it (False).
        self.store_hooks: list[Callable[[Path, str], bool]] = []
        self.kernel_events: list[bytes] = []  # what the kernel broadcast (online and offline events)
        self.knob_writes: list[tuple[str, str]] = []  # (knob name, value) written through the io
        self.read_only: set[Path] = set()  # files the io refuses to write (EROFS)
        #: Blocks the seed's kernel holds half-online: index -> (node, zone its final phase onlines it into).
        self.deferred: dict[int, tuple[int, str]] = {}
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
        params = ["online_policy", "auto_movable_ratio", "auto_movable_numa_aware"]
        for name in params + ["parallel_hotplug_ratio"] * anolis:
            self.set_param(name, KNOB_DEFAULTS[name])
        self.set_param("memmap_on_memory", "N")

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
        (directory / "online").write_text("1\n" if state == "online" else "0\n")
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
        self.deferred.pop(index, None)

    def set_state(self, index: int, state: str, zones: Iterable[str] | None = None) -> None:
        """Change a block behind the backend's back (another onliner, the kernel); ``online`` follows."""
        directory = self.memory / f"memory{index}"
        (directory / "state").write_text(state + "\n")
        (directory / "online").write_text("1\n" if state == "online" else "0\n")
        self.deferred.pop(index, None)
        if zones is not None:
            (directory / "valid_zones").write_text(" ".join(zones) + "\n")

    def set_half_online(self, index: int, zone: str = "Normal") -> None:
        """Leave a block as the seed's kernel's PREPARE step does: ``state`` offline, ``online`` 1.

        ``valid_zones`` keeps the offline candidates; :meth:`finish_deferred` onlines it into ``zone``.
        """
        directory = self.memory / f"memory{index}"
        (directory / "state").write_text("offline\n")
        (directory / "online").write_text("1\n")
        self.deferred[index] = (self.node_of(index), zone)

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

    def knob_file(self, name: str) -> Path:
        """The file of an onlining knob (``auto_online_blocks`` or a ``memory_hotplug`` parameter)."""
        return self.memory / name if name == "auto_online_blocks" else self.params / name

    def knob(self, name: str) -> str | None:
        """A knob's value now; None when this kernel lacks it."""
        try:
            return self.knob_file(name).read_text().strip()
        except FileNotFoundError:
            return None

    def set_read_only(self, *names: str) -> None:
        """Make these knobs unwritable (``access(W_OK)`` says no, a write fails with EROFS)."""
        self.read_only.update(self.knob_file(name) for name in names)

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

    def online_flag(self, index: int) -> str:
        """``memoryN/online``: "1" online (or half-online on the seed's kernel), "0" offline."""
        return (self.memory / f"memory{index}" / "online").read_text().strip()

    def node_of(self, index: int) -> int:
        """The node ``memoryN`` is linked to (0 while it is not)."""
        links = [p.name for p in (self.memory / f"memory{index}").glob("node[0-9]*")]
        return int(links[0][4:]) if links else 0

    def block(self, index: int) -> Block:
        """``memoryN`` as the model's Block (a half-online block reads offline, as ``state`` does)."""
        return Block(index, self.block_size, self.node_of(index), State(self.state(index)), self.valid_zones(index))

    def online_blocks(self) -> Iterable[Block]:
        """Every online block, read lazily (the zone choice needs them only under some knobs)."""
        return (self.block(i) for i in self.indices() if self.state(i) == "online")

    def index_of(self, path: Path) -> int | None:
        """N when ``path`` is ``memoryN/state`` of this tree."""
        if path.name != "state" or path.parent.parent != self.memory or not path.parent.name.startswith("memory"):
            return None
        digits = path.parent.name[6:]
        return int(digits) if digits.isdigit() else None
