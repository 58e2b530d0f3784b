"""The host file: one host's memory blocks as JSON, read at start and written back after each change.

Plain synchronous code with no event loop in sight: the backend calls
``read`` and ``write_bytes`` through ``anyio.to_thread``.
"""

from __future__ import annotations

import errno
import json
import os
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hotplugd import (
    EHWPOISON,
    BackendError,
    Block,
    OnlineResult,
    Outcome,
    State,
    Topology,
    ZoneRequest,
    parse_size,
)

#: The errnos a block's ``fault`` may name; the first two are transient (hotplugd retries them).
FAULTS = {"EBUSY": errno.EBUSY, "ENOMEM": errno.ENOMEM, "EINVAL": errno.EINVAL, "EHWPOISON": EHWPOISON}
TRANSIENT = frozenset({errno.EBUSY, errno.ENOMEM})
DEFAULT_ZONES = ("Normal", "Movable")


@dataclass
class Entry:
    """One block as the file describes it."""

    index: int
    node: int = 0
    state: State = State.OFFLINE
    zone: str | None = None
    fault: str | None = None

    def view(self, size: int) -> Block:
        zones = (self.zone or "Normal",) if self.state is State.ONLINE else DEFAULT_ZONES
        return Block(self.index, size, self.node, self.state, zones)

    def dump(self) -> dict[str, Any]:
        out: dict[str, Any] = {"index": self.index, "node": self.node, "state": self.state.value}
        if self.zone:
            out["zone"] = self.zone
        if self.fault:
            out["fault"] = self.fault
        return out


@dataclass
class HostFile:
    """The host: its topology, present blocks and the blocks it will hot-add, in order."""

    path: Path
    block_size: int
    nodes: dict[int, int]
    mem_available: int
    blocks: dict[int, Entry] = field(default_factory=dict)
    hotplug: list[Entry] = field(default_factory=list)
    raw: dict[str, Any] = field(default_factory=dict)  # other keys, written back untouched

    @classmethod
    def read(cls, path: Path) -> HostFile:
        """Parse ``path``; a missing or malformed file is a BackendError naming it and the bad key."""
        try:
            raw = json.loads(path.read_text())
        except OSError as exc:
            raise BackendError(f"ledger: cannot read host file {path}: {exc.strerror}",
                               hint="set plugins.ledger.host to an existing JSON file") from None
        except json.JSONDecodeError as exc:
            raise BackendError(f"ledger: host file {path} is not valid JSON: {exc}") from None
        try:
            return cls._parse(path, raw)
        except (KeyError, TypeError, ValueError) as exc:
            raise BackendError(f"ledger: host file {path}: {exc}",
                               hint="see examples/hotplugd-example-backend/README.md for the format") from None

    @classmethod
    def _parse(cls, path: Path, raw: Mapping[str, Any]) -> HostFile:
        if not isinstance(raw, dict):
            raise ValueError("expected a JSON object")
        nodes = {int(n): _whole(c, f"nodes.{n}") for n, c in raw.get("nodes", {"0": 1}).items()}
        present = [_entry(e, f"blocks[{i}]") for i, e in enumerate(raw.get("blocks", []))]
        hotplug = [_entry(e, f"hotplug[{i}]") for i, e in enumerate(raw.get("hotplug", []))]
        for entry in present + hotplug:
            if entry.node not in nodes:
                raise ValueError(f"block {entry.index} is on node {entry.node}, which is not in nodes")
        return cls(path, parse_size(raw.get("block_size", 128 << 20)), nodes,
                   parse_size(raw.get("mem_available", 16 << 30)), {e.index: e for e in present}, hotplug,
                   {k: v for k, v in raw.items() if k not in ("blocks", "hotplug")})

    def dump(self) -> bytes:
        """The file's new content (taken on the event loop, written in a thread)."""
        data = {**self.raw, "blocks": [e.dump() for e in sorted(self.blocks.values(), key=lambda e: e.index)],
                "hotplug": [e.dump() for e in self.hotplug]}
        return (json.dumps(data, indent=2) + "\n").encode()

    def topology(self) -> Topology:
        return Topology(dict(self.nodes), self.mem_available, self.block_size)

    def census(self) -> list[Block]:
        return [e.view(self.block_size) for e in list(self.blocks.values())]

    def plug(self) -> Block | None:
        """Hot-add the next block of ``hotplug`` (None when there is none left)."""
        if not self.hotplug:
            return None
        entry = self.hotplug.pop(0)
        self.blocks[entry.index] = entry
        return entry.view(self.block_size)

    def online(self, index: int, zone: ZoneRequest) -> OnlineResult:
        """Online one block as a kernel would answer, mapping errors to hotplugd's outcomes."""
        entry = self.blocks.get(index)
        if entry is None:
            return OnlineResult(Outcome.GONE, errno=errno.ENOENT, detail="not in the host file")
        if entry.state is State.ONLINE:
            return OnlineResult(Outcome.ALREADY_ONLINE, zone=entry.zone, errno=errno.EINVAL)
        if entry.fault:
            code = FAULTS[entry.fault]
            if code in TRANSIENT:
                entry.fault = None  # busy once; the retry succeeds
                return OnlineResult(Outcome.TRANSIENT, errno=code)
            return OnlineResult(Outcome.PERMANENT, errno=code, detail=f"fault {entry.fault}")
        entry.state = State.ONLINE
        entry.zone = "Movable" if zone is ZoneRequest.MOVABLE else "Normal"
        return OnlineResult(Outcome.ONLINED, zone=entry.zone)


def write_bytes(path: Path, data: bytes) -> None:
    """Replace ``path`` atomically: a reader sees the old file or the new one, never half of it."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def _whole(value: Any, key: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"{key}: expected a whole number, got {value!r}")
    return value


def _entry(raw: Any, key: str) -> Entry:
    if not isinstance(raw, dict) or "index" not in raw:
        raise ValueError(f"{key}: expected an object with an index")
    unknown = set(raw) - {"index", "node", "state", "zone", "fault"}
    if unknown:
        raise ValueError(f"{key}: unknown keys {sorted(unknown)}")
    fault = raw.get("fault")
    if fault is not None and fault not in FAULTS:
        raise ValueError(f"{key}.fault: expected one of {', '.join(FAULTS)}, got {fault!r}")
    state = raw.get("state", "offline")
    if state not in ("online", "offline"):
        raise ValueError(f"{key}.state: expected online or offline, got {state!r}")
    return Entry(_whole(raw["index"], f"{key}.index"), _whole(raw.get("node", 0), f"{key}.node"),
                 State(state), raw.get("zone"), fault)
