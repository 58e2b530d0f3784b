"""Reading a host's memory blocks from sysfs and procfs (blocking: call from a worker thread).

Every path is built from the configured roots, so tests point them at a fake
tree. All file access goes through one :class:`SysfsIO` object, the seam a
test (or :mod:`hotplugd_sysfs.testing.fakesysfs`) replaces to play the kernel.
"""

from __future__ import annotations

import errno
import os
import re
import time
from collections.abc import Iterable
from dataclasses import dataclass, replace
from pathlib import Path

from hotplugd import Block, State, Topology

from .formats import is_gone, parse_cpulist, parse_meminfo, parse_zones

__all__ = ["REGISTER_WAIT", "BlockInfo", "NotRegistered", "Sysfs", "SysfsIO", "is_gone", "parse_cpulist",
           "parse_meminfo", "parse_zones"]

_MEMORY_DIR = re.compile(r"memory(\d+)")
_STATES = {state.value: state for state in State}
_NODE_DIR = re.compile(r"node(\d+)")


#: What one ``read(2)`` of an attribute asks for: a page, the most a sysfs attribute holds.
_PAGE = 4096

#: How long a scan waits for blocks announced but not yet linked to their node.
REGISTER_WAIT = 2.0


class NotRegistered(Exception):
    """The block exists but is not linked to its node yet: its ``valid_zones`` must not be read."""

    def __init__(self, index: int) -> None:
        super().__init__(f"memory{index} has no node link yet")
        self.index = index


class SysfsIO:
    """The host's files. Each call is one syscall-sized operation; errors are ``OSError`` with errno."""

    def read(self, path: Path) -> str:
        """The whole file (a sysfs attribute is at most a page: one ``read(2)``, twice as fast as ``open()``).

        A read shorter than asked for has all there is (sysfs hands an attribute out whole, a small
        file is read whole): no second ``read(2)`` to see the end of it, a syscall saved per attribute.
        """
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        try:
            data = os.read(fd, _PAGE)
            if len(data) == _PAGE:  # a larger file (procfs): read on to its end
                chunks = [data]
                while chunks[-1]:
                    chunks.append(os.read(fd, _PAGE))
                data = b"".join(chunks)
        finally:
            os.close(fd)
        return data.decode("ascii", errors="replace")

    def write(self, path: Path, value: str) -> None:
        """One ``write(2)`` of ``value``, as sysfs attributes expect."""
        fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
        try:
            os.write(fd, value.encode())
        finally:
            os.close(fd)

    def listdir(self, path: str | Path) -> list[str]:
        return os.listdir(path)

    def read_bytes(self, path: Path) -> bytes:
        """A whole file of any size, as bytes (``/proc/PID/maps``)."""
        with open(path, "rb") as fh:
            return fh.read()

    def readlink(self, path: Path) -> str:
        return os.readlink(path)

    def lexists(self, path: str | Path) -> bool:
        """Whether ``path`` exists, links not followed (one ``lstat``, half a ``listdir`` on kernfs)."""
        return os.path.lexists(path)

    def writable(self, path: Path) -> bool:
        return os.access(path, os.W_OK)


@dataclass(frozen=True, slots=True)
class BlockInfo:
    """A block as a full scan reads it: the model's Block plus the files the core does not need."""

    block: Block
    phys_index: int
    removable: bool


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
        self._numa: bool | None = None
        self._memory_path = str(self.memory_dir)  # node_of() builds paths per add event: strings, not Paths
        self._last_node: int | None = None
        self.register_wait = REGISTER_WAIT

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

    @property
    def numa(self) -> bool:
        """A NUMA kernel: blocks get a ``nodeN`` link once registered under their node."""
        if self._numa is None:
            self._numa = self.node_dir.is_dir()
        return self._numa

    def node_of(self, index: int) -> int | None:
        """The node from the ``nodeN`` link inside the block's directory.

        None while the block is not registered under a node yet (0 on a kernel without NUMA).
        The node found last is tried first, with one ``lstat`` of its link (a hot-add's
        blocks share a node); the directory is listed only when that link is not there.
        """
        base = f"{self._memory_path}/memory{index}"
        last = self._last_node
        if last is not None and self.io.lexists(f"{base}/node{last}"):
            return last
        for name in self.io.listdir(base):
            match = _NODE_DIR.fullmatch(name)
            if match:
                self._last_node = node = int(match.group(1))
                return node
        return None if self.numa else 0

    def read_block(self, index: int) -> Block | None:
        """The block as sysfs shows it now; None when its directory is gone.

        Raises :class:`NotRegistered` while the block has no node yet.
        """
        try:
            return self._read_block(index)
        except OSError as exc:
            if is_gone(exc):
                return None
            raise

    def _read_block(self, index: int) -> Block:
        base = self.block_dir(index)
        node = self.node_of(index)
        if node is None:
            # The kernel announces a block before it links it to its node; until then
            # mem->nid is NUMA_NO_NODE and reading valid_zones oopses (6.1 zone_for_pfn_range).
            raise NotRegistered(index)
        state = self._state(base)
        zones = parse_zones(self.attr(base / "valid_zones"))
        return Block(index, self.block_size, node, state, zones)

    def block_state(self, index: int) -> State:
        """``state``; :attr:`State.KERNEL_DEFERRED` when it reads offline while ``online`` reads 1.

        The seed's kernel (Anolis) leaves a block so between its PREPARE step and its
        final phase. ``online`` is read only for an offline block. OSError when gone; ValueError,
        naming the file and what it reads, for a state no kernel spells.
        """
        base = self.block_dir(index)
        state = self._state(base)
        if state is State.OFFLINE and self.attr(base / "online") == "1":
            return State.KERNEL_DEFERRED
        return state

    def _state(self, base: Path) -> State:
        """``base/state`` as a :class:`State`; ValueError naming the file and its text for one no kernel spells."""
        text = self.attr(base / "state")
        state = _STATES.get(text)  # a dict lookup per read back
        if state is None:
            raise ValueError(f"{base / 'state'} reads {text[:40]!r}, which is no memory block state")
        return state

    def verify_block(self, block: Block) -> Block | None:
        """``block`` as the host shows it now (``state``, ``online``, ``valid_zones``); None when gone.

        Two reads for an online block, three for an offline one (and one ``lstat``):
        cheap enough for each block another onliner onlined. A block not linked to
        its node yet keeps ``valid_zones = ()`` (reading it would oops 6.1).
        """
        try:
            node = self.node_of(block.index)
            state = self.block_state(block.index)
            zones = () if node is None else parse_zones(self.attr(self.block_dir(block.index) / "valid_zones"))
        except OSError as exc:
            if is_gone(exc):
                return None
            raise
        return replace(block, node=block.node if node is None else node, state=state, valid_zones=zones)

    def read_blocks(self, indices: Iterable[int]) -> tuple[dict[int, Block], list[int]]:
        """The blocks of ``indices`` that exist and are registered; and those not registered yet."""
        found: dict[int, Block] = {}
        waiting: list[int] = []
        for index in indices:
            try:
                block = self.read_block(index)
            except NotRegistered:
                waiting.append(index)
                continue
            if block is not None:
                found[index] = block
        return found, waiting

    def read_info(self, index: int) -> BlockInfo | None:
        """The block plus ``phys_index`` (hex) and ``removable``; None when gone. May raise NotRegistered."""
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

    def scan(self) -> tuple[list[BlockInfo], list[int]]:
        """Every present block, ascending; and those still unregistered after ``register_wait`` seconds."""
        infos: dict[int, BlockInfo] = {}
        waiting = self.indices()
        deadline = time.monotonic() + self.register_wait
        delay = 0.001
        while waiting:
            retry = []
            for index in waiting:
                try:
                    info = self.read_info(index)
                except NotRegistered:
                    retry.append(index)
                    continue
                if info is not None:
                    infos[index] = info
            waiting = retry
            if not waiting or time.monotonic() + delay > deadline:
                break
            time.sleep(delay)
            delay = min(delay * 2, 0.1)
        return [infos[i] for i in sorted(infos)], waiting

    def census(self) -> list[Block]:
        """Every present, registered block, cheaply (no ``phys_index``/``removable``, no waiting)."""
        found, _ = self.read_blocks(self.indices())
        return list(found.values())

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

    def module_param(self, name: str) -> str | None:
        """A ``memory_hotplug`` module parameter, or None when this kernel lacks it."""
        try:
            return self.attr(self.params_dir / name)
        except FileNotFoundError:
            return None

    def topology(self) -> Topology:
        return Topology(self.cpus_per_node(), self.mem_available(), self.block_size,
                        kernel_onlines=self.auto_online_blocks() != "offline")
