"""Reading a host's memory blocks from sysfs and procfs (blocking: call from a worker thread).

Every path is built from the configured roots, so tests point them at a fake
tree. All file access goes through one :class:`SysfsIO` object, the seam a
test (or :mod:`hotplugd.testing.fakesysfs`) replaces to play the kernel.
"""

from __future__ import annotations

import errno
import os
import re
from dataclasses import dataclass
from pathlib import Path

from hotplugd import Block, State, Topology

_MEMORY_DIR = re.compile(r"memory(\d+)")
_NODE_DIR = re.compile(r"node(\d+)")


class SysfsIO:
    """The host's files. Each call is one syscall-sized operation; errors are ``OSError`` with errno."""

    def read(self, path: Path) -> str:
        with open(path, encoding="ascii", errors="replace") as fh:
            return fh.read()

    def write(self, path: Path, value: str) -> None:
        """One ``write(2)`` of ``value``, as sysfs attributes expect."""
        fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
        try:
            os.write(fd, value.encode())
        finally:
            os.close(fd)

    def listdir(self, path: Path) -> list[str]:
        return os.listdir(path)

    def writable(self, path: Path) -> bool:
        return os.access(path, os.W_OK)


@dataclass(frozen=True, slots=True)
class BlockInfo:
    """A block as a full scan reads it: the model's Block plus the files the core does not need."""

    block: Block
    phys_index: int
    removable: bool


def is_gone(exc: OSError) -> bool:
    """The device went away: ENOENT on open, ENODEV on a file opened before its removal."""
    return exc.errno in (errno.ENOENT, errno.ENODEV)


def parse_cpulist(text: str) -> int:
    """How many CPUs a ``cpulist`` names: ``"0-3,8-11"`` → 8; empty (a memory-only node) → 0."""
    count = 0
    for part in text.strip().split(","):
        if not part:
            continue
        lo, _, hi = part.partition("-")
        count += (int(hi) - int(lo) + 1) if hi else 1
    return count


def parse_meminfo(text: str, key: str = "MemAvailable") -> int | None:
    """Bytes of one ``/proc/meminfo`` line (given in kB), or None when absent."""
    for line in text.splitlines():
        name, _, rest = line.partition(":")
        if name == key:
            fields = rest.split()
            return int(fields[0]) * 1024 if fields and fields[0].isdigit() else None
    return None


def parse_zones(text: str) -> tuple[str, ...]:
    """``valid_zones``: ``"Normal Movable"`` → ("Normal", "Movable"); ``"none"`` → ()."""
    zones = tuple(text.split())
    return () if zones == ("none",) else zones


class Sysfs:
    """The memory and node directories under a sysfs root, and ``/proc`` under a proc root."""

    def __init__(self, root: str | Path = "/sys", proc: str | Path = "/proc", io: SysfsIO | None = None) -> None:
        self.root = Path(root)
        self.proc = Path(proc)
        self.io = io or SysfsIO()
        self.memory_dir = self.root / "devices/system/memory"
        self.node_dir = self.root / "devices/system/node"
        self.params_dir = self.root / "module/memory_hotplug/parameters"
        self._block_size: int | None = None

    def __repr__(self) -> str:
        return f"<Sysfs {self.root} proc={self.proc}>"

    def block_dir(self, index: int) -> Path:
        return self.memory_dir / f"memory{index}"

    def state_path(self, index: int) -> Path:
        return self.block_dir(index) / "state"

    def attr(self, path: Path) -> str:
        return self.io.read(path).strip()

    @property
    def block_size(self) -> int:
        """``block_size_bytes`` (hex, without ``0x``); read once, it never changes."""
        if self._block_size is None:
            self._block_size = int(self.attr(self.memory_dir / "block_size_bytes"), 16)
        return self._block_size

    def auto_online_blocks(self) -> str:
        """``offline``, ``online``, ``online_kernel`` or ``online_movable``; absent reads as offline."""
        try:
            return self.attr(self.memory_dir / "auto_online_blocks")
        except FileNotFoundError:
            return "offline"

    def indices(self) -> list[int]:
        """Every present block, ascending."""
        found = (_MEMORY_DIR.fullmatch(name) for name in self.io.listdir(self.memory_dir))
        return sorted(int(m.group(1)) for m in found if m)

    def node_of(self, index: int) -> int:
        """The node from the ``nodeN`` link inside the block's directory (0 without NUMA)."""
        for name in self.io.listdir(self.block_dir(index)):
            match = _NODE_DIR.fullmatch(name)
            if match:
                return int(match.group(1))
        return 0

    def read_block(self, index: int) -> Block | None:
        """The block as sysfs shows it now; None when its directory is gone."""
        try:
            return self._read_block(index)
        except OSError as exc:
            if is_gone(exc):
                return None
            raise

    def _read_block(self, index: int) -> Block:
        base = self.block_dir(index)
        node = self.node_of(index)
        state = State(self.attr(base / "state"))
        zones = parse_zones(self.attr(base / "valid_zones"))
        return Block(index, self.block_size, node, state, zones)

    def read_blocks(self, indices: list[int]) -> dict[int, Block]:
        """The blocks of ``indices`` that still exist."""
        blocks = (self.read_block(i) for i in indices)
        return {b.index: b for b in blocks if b is not None}

    def read_info(self, index: int) -> BlockInfo | None:
        """The block plus ``phys_index`` (hex) and ``removable``; None when gone."""
        try:
            block = self._read_block(index)
            phys = int(self.attr(self.block_dir(index) / "phys_index"), 16)
            removable = self._removable(index)
        except OSError as exc:
            if is_gone(exc):
                return None
            raise
        return BlockInfo(block, phys, removable)

    def _removable(self, index: int) -> bool:
        try:
            return self.attr(self.block_dir(index) / "removable") == "1"
        except OSError as exc:  # removed from recent kernels
            if exc.errno in (errno.ENOENT, errno.EINVAL):
                return True
            raise

    def scan(self) -> list[BlockInfo]:
        """Every present block, in ascending order (blocks removed meanwhile are left out)."""
        infos = (self.read_info(i) for i in self.indices())
        return [info for info in infos if info is not None]

    def census(self) -> list[Block]:
        """Every present block, cheaply (no ``phys_index``/``removable``)."""
        return list(self.read_blocks(self.indices()).values())

    def cpus_per_node(self) -> dict[int, int]:
        """CPUs of each node from ``nodeN/cpulist``; a host without node directories is one node."""
        try:
            names = self.io.listdir(self.node_dir)
        except FileNotFoundError:
            return {0: os.cpu_count() or 1}
        nodes: dict[int, int] = {}
        for name in names:
            match = _NODE_DIR.fullmatch(name)
            if match:
                nodes[int(match.group(1))] = parse_cpulist(self.io.read(self.node_dir / name / "cpulist"))
        return nodes or {0: os.cpu_count() or 1}

    def mem_available(self) -> int:
        return parse_meminfo(self.io.read(self.proc / "meminfo")) or 0

    def cmdline(self) -> str:
        try:
            return self.attr(self.proc / "cmdline")
        except FileNotFoundError:
            return ""

    def module_param(self, name: str) -> str | None:
        """A ``memory_hotplug`` module parameter, or None when this kernel lacks it."""
        try:
            return self.attr(self.params_dir / name)
        except FileNotFoundError:
            return None

    def topology(self) -> Topology:
        return Topology(self.cpus_per_node(), self.mem_available(), self.block_size,
                        kernel_onlines=self.auto_online_blocks() != "offline")
