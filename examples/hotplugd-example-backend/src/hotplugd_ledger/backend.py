"""The ``ledger`` backend: hotplugd's Backend contract over a HostFile."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import Any

import anyio

from hotplugd import (
    Action,
    Backend,
    Block,
    BlockEvent,
    ConfigError,
    ConfigProblem,
    OnlineResult,
    Outcome,
    Rescan,
    Scan,
    Topology,
    ZoneRequest,
)

from .hostfile import HostFile, write_bytes
from .options import NAME, parse


class LedgerBackend(Backend):
    """A host described by a JSON file; every change is written back to it."""

    def __init__(self, path: Path, concurrency: int = 1) -> None:
        self.path = path
        self.concurrency = concurrency
        self._host: HostFile | None = None
        self._writing = anyio.Lock()

    @classmethod
    def from_options(cls, options: Mapping[str, Any]) -> LedgerBackend:
        """The factory hotplugd calls with ``[plugins.ledger]``."""
        problems: list[ConfigProblem] = []
        parsed = parse(options, problems)
        if problems:
            raise ConfigError("; ".join(f"{p.key}: {p.message}" for p in problems))
        if parsed.host is None:
            raise ConfigError(f"the {NAME} backend needs plugins.{NAME}.host",
                              hint=f'--set plugins.{NAME}.host=\'"/path/to/host.json"\'')
        return cls(parsed.host, parsed.concurrency)

    def __repr__(self) -> str:
        return f"<LedgerBackend {self.path} concurrency={self.concurrency}>"

    def describe(self) -> str:
        return f"ledger({self.path}, concurrency={self.concurrency})"

    @property
    def host(self) -> HostFile:
        if self._host is None:
            raise RuntimeError("LedgerBackend used before start()")
        return self._host

    async def start(self) -> None:
        self._host = await anyio.to_thread.run_sync(HostFile.read, self.path)

    async def scan(self) -> Scan:
        return Scan(self.host.census(), self.host.topology())

    async def topology(self) -> Topology:
        return self.host.topology()

    async def events(self) -> AsyncIterator[BlockEvent | Rescan]:
        """The file's ``hotplug`` blocks, one by one; then the stream ends (the host adds no more)."""
        while (block := self.host.plug()) is not None:
            await self._save()
            yield BlockEvent(Action.ADD, block.index, block)

    async def online(self, block: Block, zone: ZoneRequest) -> OnlineResult:
        result = self.host.online(block.index, zone)
        if result.outcome is Outcome.ONLINED:
            await self._save()
        return result

    def census(self) -> list[Block] | None:
        return self.host.census() if self._host is not None else None

    async def _save(self) -> None:
        data = self.host.dump()  # a snapshot taken on the event loop; written in a thread
        async with self._writing:
            await anyio.to_thread.run_sync(write_bytes, self.path, data)
