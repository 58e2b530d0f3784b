"""The simulated host's state across daemon restarts: an append-only journal, compacted on load.

A real kernel keeps its memory blocks when hotplugd dies; the simulated host
lives in the daemon's process and would not. With ``state_file`` set, the host
loads its blocks (and how far the scenario got) from that file at start, and
appends one line per change afterwards::

    hotplugd-simulated-state 1 <fingerprint>   header: which settings wrote it
    n <next_index> <onlined_bytes>             counters (snapshot)
    b <index> <node> <zone|-> <errno>          a block; zone "-" means offline (snapshot)
    s <step> <count>                           blocks scenario step <step> plugged or unplugged (snapshot)
    d <step>                                   scenario step <step> finished
    p <index> <node> <step>                    plugged (step -1: at boot)
    o <index> <zone>                           onlined into <zone>
    u <index> <step>                           unplugged (step -1: a "block gone" fault)
    x <index> <errno>                          a permanent fault drawn for the block

Loading replays the lines, ignores a torn last line (a kill -9 in the middle
of a ``write``), writes the result as a snapshot to a temp file and renames
it over the journal (``os.replace``: a crash leaves the old or the new file,
never half of one), then keeps appending. An append is one ``write(2)`` of a
short line to the page cache, with no ``fsync``: it survives the process being
killed, which is what the file is for, not the machine losing power.
"""

from __future__ import annotations

import hashlib
import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from hotplugd import BackendError

MAGIC = "hotplugd-simulated-state"
VERSION = "1"
OFFLINE = "-"


@dataclass(slots=True)
class SavedBlock:
    """A block as the journal knows it."""

    index: int
    node: int
    zone: str | None = None  # None: offline
    poisoned: int = 0


@dataclass
class Saved:
    """Everything the journal holds: blocks, counters and the scenario's progress."""

    blocks: dict[int, SavedBlock] = field(default_factory=dict)
    next_index: int = 0
    onlined_bytes: int = 0
    #: Blocks each scenario step plugged (or unplugged, for a remove step) so far.
    progress: Counter[int] = field(default_factory=Counter)
    done: set[int] = field(default_factory=set)


def fingerprint(*parts: object) -> str:
    """A short digest of the settings a journal belongs to (block size, nodes, scenario...)."""
    return hashlib.sha256(repr(parts).encode()).hexdigest()[:16]


class StateFile:
    """One journal file. ``load`` then ``open`` (both blocking: call from a thread), then the appenders."""

    def __init__(self, path: str | Path, fingerprint: str, block_size: int) -> None:
        self.path = Path(path)
        self.fingerprint = fingerprint
        self.block_size = block_size
        self._fd: int | None = None

    def __repr__(self) -> str:
        return f"<StateFile {self.path} [{'OPEN' if self._fd is not None else 'CLOSED'}]>"

    # -- loading and compacting ---------------------------------------------------------------

    def load(self) -> Saved | None:
        """The saved state, or None when the file does not exist yet."""
        try:
            text = self.path.read_text(encoding="ascii")
        except FileNotFoundError:
            return None
        except (OSError, UnicodeDecodeError) as exc:
            raise self._corrupt(f"cannot be read: {exc}") from None
        lines = text.split("\n")
        lines.pop()  # "" after the last newline, or a torn last line: either way not a record
        if not lines or lines[0].split() != [MAGIC, VERSION, self.fingerprint]:
            raise BackendError(
                f"{self.path} does not hold this simulated host's state (other settings or not a state file)",
                hint="delete it to start over, or point plugins.simulated.state_file elsewhere")
        saved = Saved()
        for number, line in enumerate(lines[1:], 2):
            try:
                self._apply(saved, line.split())
            except (ValueError, IndexError, KeyError):
                raise self._corrupt(f"line {number} is not a record: {line[:80]!r}") from None
        return saved

    def _corrupt(self, why: str) -> BackendError:
        return BackendError(f"state file {self.path} {why}", hint="delete it to start over")

    def _apply(self, saved: Saved, f: list[str]) -> None:
        kind, blocks = f[0], saved.blocks
        if kind == "p":
            index, node, step = int(f[1]), int(f[2]), int(f[3])
            blocks[index] = SavedBlock(index, node)
            saved.next_index = max(saved.next_index, index + 1)
            if step >= 0:
                saved.progress[step] += 1
        elif kind == "o":
            blocks[int(f[1])].zone = f[2]
            saved.onlined_bytes += self.block_size
        elif kind == "u":
            blocks.pop(int(f[1]), None)
            if int(f[2]) >= 0:
                saved.progress[int(f[2])] += 1
        elif kind == "x":
            blocks[int(f[1])].poisoned = int(f[2])
        elif kind == "d":
            saved.done.add(int(f[1]))
        elif kind == "b":
            index = int(f[1])
            blocks[index] = SavedBlock(index, int(f[2]), None if f[3] == OFFLINE else f[3], int(f[4]))
        elif kind == "n":
            saved.next_index, saved.onlined_bytes = int(f[1]), int(f[2])
        elif kind == "s":
            saved.progress[int(f[1])] = int(f[2])
        else:
            raise ValueError(kind)

    def open(self, saved: Saved) -> None:
        """Replace the journal by a snapshot of ``saved`` (atomically), then keep it open for appends."""
        lines = [f"{MAGIC} {VERSION} {self.fingerprint}", f"n {saved.next_index} {saved.onlined_bytes}"]
        lines += [f"b {b.index} {b.node} {b.zone or OFFLINE} {b.poisoned}" for b in saved.blocks.values()]
        lines += [f"s {step} {count}" for step, count in sorted(saved.progress.items())]
        lines += [f"d {step}" for step in sorted(saved.done)]
        tmp = self.path.with_name(self.path.name + ".tmp")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            tmp.write_text("\n".join(lines) + "\n", encoding="ascii")
            os.replace(tmp, self.path)
            self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CLOEXEC)
        except OSError as exc:
            raise BackendError(f"cannot write the simulated host's state file {self.path}: {exc.strerror or exc}",
                               hint="check plugins.simulated.state_file") from None

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    # -- one line per change ------------------------------------------------------------------

    def _append(self, line: str) -> None:
        if self._fd is not None:
            os.write(self._fd, line.encode("ascii"))

    def plugged(self, index: int, node: int, step: int) -> None:
        self._append(f"p {index} {node} {step}\n")

    def onlined(self, index: int, zone: str) -> None:
        self._append(f"o {index} {zone}\n")

    def unplugged(self, index: int, step: int) -> None:
        self._append(f"u {index} {step}\n")

    def poisoned(self, index: int, errno: int) -> None:
        self._append(f"x {index} {errno}\n")

    def finished(self, step: int) -> None:
        self._append(f"d {step}\n")
