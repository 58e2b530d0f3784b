"""One guest as the backend sees it: its agent, its last block list, its health, and its onlining batches.

Onlining: concurrent :meth:`GuestLink.online` calls for one guest coalesce.
The agent serves one request at a time, so while a ``guest-set-memory-blocks``
is in flight the next callers wait, and the first of them sends everything
waiting as the next batch (at most ``max_batch`` blocks). Final-phase workers
per guest thus set the batch size, not contention inside the guest.

Health: an agent that times out or whose socket fails is "down" for
``reconnect_interval``: onlines fail fast as transient, the poller tries again
after that. When it answers again its offline blocks are announced again
(the scheduler may have given up on them meanwhile).
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import anyio
import structlog

from hotplugd import Block, BlockEvent, OnlineResult, Outcome

from . import commands
from .agent import AgentClient, AgentError, CommandFailed
from .blocks import DEFAULT_BLOCK_SIZE, diff, to_block
from .results import map_result
from .settings import GuestSettings, Settings

log = structlog.get_logger("hotplugd.qga")

#: How stale the guest's MemAvailable may get (refreshed by the poller, never on the hot path).
MEMINFO_MAX_AGE = 1.0


@dataclass(eq=False)
class _Entry:
    phys: int
    was_online: bool
    result: OnlineResult | None = field(default=None)


class GuestLink:
    """Guest number ``number`` (its node in the core's model) and everything known of it."""

    def __init__(self, number: int, settings: GuestSettings, options: Settings,
                 client: AgentClient | None = None, clock: Callable[[], float] = time.monotonic) -> None:
        self.number = number
        self.settings = settings
        self.name = settings.name
        self.options = options
        self.client = client or AgentClient(settings.qga, options.timeout, settings.name)
        self.clock = clock
        self.snapshot: dict[int, bool] | None = None  # phys_index → online, as last listed
        self.block_size: int | None = None
        self.vcpus = 1
        self.mem_available: int | None = None
        self.auto_online: str | None = None  # the guest kernel's auto_online_blocks
        self.down_until = 0.0
        self.healthy = True
        self.resizing_until = -math.inf
        self.batches = 0  # guest-set-memory-blocks calls made
        self._meminfo_at = -math.inf
        self._replay = False
        self._wake = anyio.Event()
        self._refresh_lock = anyio.Lock()
        self._batch_lock = anyio.Lock()
        self._waiting: list[_Entry] = []

    def __repr__(self) -> str:
        state = "UP" if self.available else "DOWN"
        blocks = "?" if self.snapshot is None else len(self.snapshot)
        return f"<GuestLink #{self.number} {self.name} [{state}] blocks={blocks} batches={self.batches}>"

    # -- health -------------------------------------------------------------------------

    @property
    def available(self) -> bool:
        return self.clock() >= self.down_until

    def _failed(self, during: str, exc: Exception, down_for: float | None = None) -> None:
        self.down_until = self.clock() + (self.options.reconnect_interval if down_for is None else down_for)
        self._replay = True
        if self.healthy:
            log.warning("qga_agent_down", guest=self.name, during=during, error=str(exc))
        self.healthy = False

    def _answered(self) -> None:
        if not self.healthy:
            log.info("qga_agent_back", guest=self.name)
        self.healthy = True

    # -- QMP events ---------------------------------------------------------------------

    def on_event(self, name: str, data: dict[str, Any]) -> None:
        """A QMP event of this guest's QEMU (from the daemon's own monitor)."""
        info = data.get("info") if isinstance(data.get("info"), dict) else {}
        if name == "MEMORY_DEVICE_SIZE_CHANGE" or (name == "ACPI_DEVICE_OST" and info.get("slot-type") == "DIMM"):
            self.memory_event()
        elif name == "VSERPORT_CHANGE" and self.settings.port_id and data.get("id") == self.settings.port_id:
            self.port_changed(bool(data.get("open")))

    def memory_event(self) -> None:
        """Memory is being added or removed: poll now, and often until it stops."""
        self.resizing_until = self.clock() + self.options.resize_quiet
        self.wake()

    def port_changed(self, is_open: bool) -> None:
        if is_open:
            log.info("qga_agent_port_open", guest=self.name)
            self.down_until = 0.0
            self._replay = True
            self.client.desync()
            self.wake()
        else:
            self._failed("port", AgentError("the agent closed its port"),
                         max(self.options.poll_interval, self.options.reconnect_interval))

    def wake(self) -> None:
        self._wake.set()

    async def next_poll(self) -> None:
        """Sleep until the next poll is due: soon while memory is being added, or when woken."""
        now = self.clock()
        if not self.healthy:  # retry as soon as its down time is over
            delay = self.down_until - now
        elif now < self.resizing_until:
            delay = self.options.resize_poll_interval
        else:
            delay = self.options.poll_interval
        with anyio.move_on_after(max(0.0, delay)):
            await self._wake.wait()
        self._wake = anyio.Event()

    # -- reading the guest ----------------------------------------------------------------

    def blocks(self) -> list[Block]:
        size = self.block_size or DEFAULT_BLOCK_SIZE
        return [to_block(self.number, phys, online, size) for phys, online in sorted((self.snapshot or {}).items())]

    async def _describe(self) -> None:
        if self.block_size is None:
            self.block_size = await commands.block_size(self.client)
            self.vcpus = max(1, await commands.online_vcpus(self.client))

    async def read_auto_online(self) -> str | None:
        """The guest kernel's ``auto_online_blocks`` (None when unreadable; a silent agent marks it down)."""
        if not self.available:
            return None
        try:
            text = await commands.read_file(self.client, commands.GUEST_AUTO_ONLINE)
        except AgentError as exc:
            self._failed("conflicts", exc)
            return None
        self.auto_online = text.strip() if text else None
        return self.auto_online

    async def _meminfo(self, force: bool = False) -> None:
        if force or self.clock() - self._meminfo_at > MEMINFO_MAX_AGE:
            self.mem_available = await commands.mem_available(self.client)
            self._meminfo_at = self.clock()

    async def scan(self) -> list[Block]:
        """List the guest's blocks now (the last known ones when its agent is down)."""
        if self.available:
            async with self._refresh_lock:
                try:
                    await self._describe()
                    current = await commands.list_blocks(self.client)
                    await self._meminfo(force=True)
                except AgentError as exc:
                    self._failed("scan", exc)
                else:
                    self._answered()
                    self.snapshot = current
        return self.blocks()

    async def refresh(self) -> list[BlockEvent]:
        """List the blocks again and return what changed since the last listing."""
        async with self._refresh_lock:
            try:
                await self._describe()
                current = await commands.list_blocks(self.client)
                await self._meminfo()
            except AgentError as exc:
                self._failed("poll", exc)
                return []
            self._answered()
            previous, self.snapshot = self.snapshot or {}, current
            replay, self._replay = self._replay, False
        events = diff(self.number, self.block_size or DEFAULT_BLOCK_SIZE, previous, current, replay)
        if len(current.keys() - previous.keys()) and self.clock() < self.resizing_until:
            self.resizing_until = self.clock() + self.options.resize_quiet  # still growing
        return events

    # -- onlining -------------------------------------------------------------------------

    async def online(self, phys: int) -> OnlineResult:
        """Online one block, in a batch with whatever else waits for this guest."""
        if not self.available:
            return OnlineResult(Outcome.TRANSIENT, detail=f"the agent of guest {self.name} is not answering")
        entry = _Entry(phys, bool(self.snapshot and self.snapshot.get(phys)))
        self._waiting.append(entry)
        try:
            async with self._batch_lock:
                while entry.result is None and entry in self._waiting:
                    await self._flush()
        finally:
            if entry.result is None:
                with contextlib.suppress(ValueError):
                    self._waiting.remove(entry)
        return entry.result or OnlineResult(Outcome.TRANSIENT, detail="not sent")

    async def _flush(self) -> None:
        batch = self._waiting[:self.options.max_batch]
        del self._waiting[:len(batch)]
        try:
            await self._send(batch)
        except BaseException:
            self._waiting[:0] = [e for e in batch if e.result is None]  # a cancelled sender: others send them
            raise

    def _settle(self, batch: list[_Entry], outcome: Outcome, detail: str) -> None:
        for entry in batch:
            entry.result = OnlineResult(outcome, detail=detail)

    async def _send(self, batch: list[_Entry]) -> None:
        if not self.available:
            self._settle(batch, Outcome.TRANSIENT, f"the agent of guest {self.name} is not answering")
            return
        timeout = self.options.timeout + len(batch) * self.options.online_timeout_per_block
        try:
            results = await commands.set_online(self.client, [e.phys for e in batch], timeout)
        except CommandFailed as exc:  # the agent refused the call itself (blocked command, bad request)
            self._settle(batch, Outcome.ERROR, str(exc))
            return
        except AgentError as exc:
            self._failed("online", exc)
            self._settle(batch, Outcome.TRANSIENT, str(exc))
            return
        self.batches += 1
        self._answered()
        after = None
        if self.options.verify:
            try:
                after = await commands.list_blocks(self.client)
            except AgentError as exc:  # the agent's answers stand; only the read-back is missing
                log.debug("qga_verify_failed", guest=self.name, error=str(exc))
        for entry, result in zip(batch, results, strict=True):
            entry.result = map_result(result if result.phys_index == entry.phys else None, after, entry.was_online)
