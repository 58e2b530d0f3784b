"""One guest as a host-side onliner sees it: its agent, its last block list, its health, its onlining batches.

Shared by the ``qga`` backend (the agent's socket) and the ``libvirt`` backend
(``qemuAgentCommand``): an :class:`AgentLink` only needs an
:class:`~hotplugd_guestagent.commands.Agent` to send requests through, and a
name (its domain in the core's model). What a backend adds is how it hears of
memory events and of the agent's port (:meth:`AgentLink.memory_event`,
:meth:`AgentLink.agent_changed`).

Onlining: concurrent :meth:`AgentLink.online` calls for one guest coalesce.
The agent serves one request at a time, so while a ``guest-set-memory-blocks``
is in flight the next callers wait, and the first of them sends everything
waiting as the next batch (at most ``max_batch`` blocks). Final-phase workers
per guest thus set the batch size, not contention inside the guest.

Health: an agent that times out or cannot be reached is "down" for
``reconnect_interval``, doubled after each further failure up to
``reconnect_max``: onlines fail fast as transient, the poller tries again
after that. When it answers again its offline blocks are announced again
(the scheduler may have given up on them meanwhile), and its block size,
vCPUs and ``auto_online_blocks`` are read again (it may have rebooted).
``down_reason`` says why it is down (:func:`~.errors.failure_reason`: ``timeout``,
``unavailable``, ``port_closed``, ``protocol_error``, ``oversized_reply``, ``flood``,
``false_success``), in the ``<kind>_agent_down`` log and the guest's repr.

Lies: the agent is the tenant's, so a ``success`` is a claim. The blocks it
claimed to online are checked against the next listing; one still offline
there is a false success: logged (``<kind>_false_success``, naming the guest and
blocks), sent to the core as ``offline`` (it is not onlined), and the guest is
marked down (``false_success``). What the host can and cannot check is in docs/qga.md.

``kind`` (``qga``, ``libvirt``) prefixes the log events and names the logger.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

import anyio
import structlog
from anyio.abc import ObjectSendStream

from hotplugd import Action, Block, BlockEvent, OnlineResult, Outcome, Rescan, Topology

from . import commands
from .blocks import DEFAULT_BLOCK_SIZE, GUEST_NODE, announced_together, diff, to_block
from .commands import Agent
from .errors import AgentAborted, AgentError, AgentProtocolError, CommandFailed, failure_reason
from .results import map_result

#: How stale the guest's MemAvailable may get (refreshed by the poller, never on the hot path).
MEMINFO_MAX_AGE = 1.0


@dataclass(eq=False)
class _Entry:
    phys: int
    was_online: bool
    result: OnlineResult | None = field(default=None)


class LinkOptions(Protocol):
    """The settings an :class:`AgentLink` reads (both backends' ``Settings`` have them)."""

    @property
    def timeout(self) -> float: ...  # one agent request
    @property
    def online_timeout_per_block(self) -> float: ...  # added per block of a guest-set-memory-blocks
    @property
    def poll_interval(self) -> float: ...  # fallback poll of the block list
    @property
    def resize_poll_interval(self) -> float: ...  # poll while memory is being added
    @property
    def resize_quiet(self) -> float: ...  # adding is over after this long without a new block or event
    @property
    def reconnect_interval(self) -> float: ...  # first wait after a failure, doubled up to reconnect_max
    @property
    def reconnect_max(self) -> float: ...
    @property
    def max_batch(self) -> int: ...  # blocks per guest-set-memory-blocks
    @property
    def verify(self) -> bool: ...  # re-read the block list after each batch


def backoff(options: LinkOptions, failures: int) -> float:
    """How long to leave alone what failed ``failures`` times in a row (an agent, a monitor, libvirtd):
    ``reconnect_interval``, doubled after each further failure, up to ``reconnect_max``."""
    return min(options.reconnect_max, options.reconnect_interval * 2 ** max(0, failures - 1))


class AgentLink:
    """One guest (one domain of the core's model, named by the guest's name) and everything known of it."""

    def __init__(self, name: str, options: LinkOptions, client: Agent, clock: Callable[[], float] = time.monotonic,
                 kind: str = "agent") -> None:
        self.name = name
        self.options = options
        self.client = client
        self.clock = clock
        self.kind = kind
        self.log = structlog.get_logger(f"hotplugd.{kind}")
        self.snapshot: dict[int, bool] | None = None  # phys_index → online, as last listed
        self.block_size: int | None = None
        self.vcpus = 1
        self.mem_available: int | None = None
        self.auto_online: str | None = None  # the guest kernel's auto_online_blocks
        self.down_until = 0.0
        self.healthy = True
        self.down_reason: str | None = None  # why it is down (failure_reason); None while it answers
        self.failures = 0  # in a row: each doubles the wait before the next attempt
        self._described = False  # block size, vCPUs, auto_online_blocks read since the agent last failed
        self.resizing_until = -math.inf
        self.awaiting_until = -math.inf  # a device was added whose blocks the guest has not created yet
        self.batches = 0  # guest-set-memory-blocks calls made
        self._meminfo_at = -math.inf
        self._replay = False
        self._wake = anyio.Event()
        self.listing_lock = anyio.Lock()  # held while the snapshot is read and replaced (dimms.py too)
        self._batch_lock = anyio.Lock()
        self._waiting: list[_Entry] = []
        self._claimed: dict[int, int] = {}  # blocks the agent said it onlined -> its batch, until a listing judges

    def __repr__(self) -> str:
        state = "UP" if self.available else f"DOWN {self.down_reason or ''}".rstrip()
        blocks = "?" if self.snapshot is None else len(self.snapshot)
        return f"<{type(self).__name__} {self.name} [{state}] blocks={blocks} batches={self.batches}>"

    # -- health -------------------------------------------------------------------------

    @property
    def available(self) -> bool:
        return self.clock() >= self.down_until

    @property
    def kernel_onlines(self) -> bool:
        """The guest's own kernel onlines hot-added memory (``auto_online_blocks`` read and not ``offline``)."""
        return self.auto_online is not None and self.auto_online != "offline"

    def backoff(self) -> float:
        """How long to leave the agent alone after its latest failure."""
        return backoff(self.options, self.failures)

    def _failed(self, during: str, exc: Exception, down_for: float | None = None) -> None:
        if isinstance(exc, AgentAborted):  # given up on a port event, which port_changed() accounts for
            return
        self.failures += 1
        self.down_until = self.clock() + (self.backoff() if down_for is None else down_for)
        self._replay = True
        self._described = False
        self.down_reason = failure_reason(exc)
        if self.healthy:
            self.log.warning(f"{self.kind}_agent_down", guest=self.name, during=during, reason=self.down_reason,
                             error=str(exc))
        self.healthy = False

    def _answered(self) -> None:
        if not self.healthy:
            self.log.info(f"{self.kind}_agent_back", guest=self.name, failures=self.failures, reason=self.down_reason)
        self.healthy = True
        self.down_reason = None
        self.failures = 0

    # -- what the hypervisor says ------------------------------------------------------------

    def memory_event(self, wait_for_blocks: float = 0.0) -> None:
        """Memory is being added or removed: poll now, and often until it stops. With ``wait_for_blocks``
        (a device was added: its blocks will come, once the guest has handled the ACPI or virtio request,
        seconds later on a loaded host) poll fast until a new block appears, for at most that long."""
        now = self.clock()
        self.resizing_until = now + self.options.resize_quiet
        if wait_for_blocks:
            self.awaiting_until = max(self.awaiting_until, now + wait_for_blocks)
        self.wake()

    def agent_changed(self, connected: bool) -> None:
        """The hypervisor says the agent's port opened (``connected``) or closed: give up the request in
        flight (no reply comes to it either way); an open port is tried at once, its blocks announced again."""
        self.client.abort()
        if connected:
            self.log.info(f"{self.kind}_agent_port_open", guest=self.name)
            self.revisit()
        else:
            self._failed("port", AgentProtocolError("port_closed", "the agent closed its port"),
                         max(self.options.poll_interval, self.options.reconnect_interval))

    def revisit(self) -> None:
        """Talk to the agent again now (its port opened, or the hypervisor's connection came back): list the
        blocks at once, read the guest's description again and announce its offline blocks again."""
        self.down_until = 0.0
        self.failures = 0
        self._replay = True
        self._described = False
        self.wake()

    def wake(self) -> None:
        self._wake.set()

    async def next_poll(self) -> None:
        """Sleep until the next poll is due: soon while memory is being added, or when woken."""
        now = self.clock()
        if not self.healthy:  # retry as soon as its down time is over
            delay = self.down_until - now
        elif now < self.resizing_until or now < self.awaiting_until:
            delay = self.options.resize_poll_interval
        else:
            delay = self.options.poll_interval
        with anyio.move_on_after(max(0.0, delay)):
            await self._wake.wait()
        self._wake = anyio.Event()

    # -- reading the guest ----------------------------------------------------------------

    def blocks(self) -> list[Block]:
        size = self.block_size or DEFAULT_BLOCK_SIZE
        return [to_block(self.name, phys, online, size) for phys, online in sorted((self.snapshot or {}).items())]

    def topology(self) -> Topology:
        """This guest's kernel as the core sees it, from what was last read (no agent round trip)."""
        return Topology({GUEST_NODE: self.vcpus}, self.mem_available or 0, self.block_size or DEFAULT_BLOCK_SIZE,
                        kernel_onlines=self.kernel_onlines)

    async def _describe(self) -> None:
        """Block size, online vCPUs and auto_online_blocks: once per connection (the guest may have rebooted)."""
        if self._described:
            return
        self.block_size = await commands.block_size(self.client)
        with contextlib.suppress(CommandFailed):  # a blocked guest-get-vcpus: one CPU
            self.vcpus = max(1, await commands.online_vcpus(self.client))
        text = await commands.read_file(self.client, commands.GUEST_AUTO_ONLINE)
        self.auto_online = text.strip() if text else None
        self._described = True

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
            async with self.listing_lock:
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

    @property
    def can_announce(self) -> bool:
        """Blocks may be announced without a listing: the block size and blocks are known, the agent answers,
        and the guest's kernel leaves added blocks offline."""
        return self.available and self.block_size is not None and self.snapshot is not None and not self.kernel_onlines

    async def announce(self, blocks: range, send: ObjectSendStream[BlockEvent | Rescan], device: str) -> bool:
        """A device's blocks learned without a listing (a DIMM's address range): put those not known yet in the
        snapshot as offline and send their adds, as one burst; False (nothing sent) when it cannot."""
        async with self.listing_lock:
            snapshot, size = self.snapshot, self.block_size
            if not self.can_announce or snapshot is None or size is None:  # the agent failed meanwhile
                return False
            new = [phys for phys in blocks if phys not in snapshot]
            for phys in new:
                snapshot[phys] = False
            self.log.info(f"{self.kind}_dimm_blocks", guest=self.name, device=device, first=blocks.start,
                          blocks=len(blocks), new=len(new))
            adds = [BlockEvent(Action.ADD, phys, to_block(self.name, phys, False, size), domain=self.name)
                    for phys in new]
            for event in announced_together(adds):
                await send.send(event)
        return True

    async def refresh(self) -> list[BlockEvent]:
        """List the blocks again and return what changed since the last listing."""
        async with self.listing_lock:
            try:
                await self._describe()
                judged = self.batches  # the batches answered before this listing is asked for
                current = await commands.list_blocks(self.client)
                await self._meminfo()
            except AgentError as exc:
                self._failed("poll", exc)
                return []
            self._answered()
            previous, self.snapshot = self.snapshot or {}, current
            replay, self._replay = self._replay, False
        events = diff(self.name, self.block_size or DEFAULT_BLOCK_SIZE, previous, current, replay)
        events += self._check_claims(current, judged)
        if current.keys() - previous.keys() and self.clock() < max(self.resizing_until, self.awaiting_until):
            self.awaiting_until = -math.inf  # the awaited blocks are coming
            self.resizing_until = self.clock() + self.options.resize_quiet  # still growing
        return events

    def _check_claims(self, current: dict[int, bool], judged: int) -> list[BlockEvent]:
        """``offline`` for each block the agent claimed to online that this listing shows offline (a lie). Only the
        claims of the first ``judged`` batches: a batch answered after the listing was asked for (while the poll
        read MemAvailable, say) may have onlined blocks it shows offline; the next listing judges those."""
        claimed = [phys for phys, batch in self._claimed.items() if batch <= judged]
        for phys in claimed:
            del self._claimed[phys]
        lied = sorted(phys for phys in claimed if current.get(phys) is False)
        if not lied:
            return []
        self.log.warning(f"{self.kind}_false_success", guest=self.name, blocks=lied[:32], count=len(lied),
                    detail="the agent reported success, its next listing shows the blocks offline")
        self._failed("verify", AgentProtocolError("false_success", f"{len(lied)} blocks reported onlined read offline"))
        return [BlockEvent(Action.OFFLINE, phys, domain=self.name) for phys in lied]

    # -- onlining -------------------------------------------------------------------------

    async def online(self, phys: int) -> OnlineResult:
        """Online one block, in a batch with whatever else waits for this guest."""
        return (await self.online_many([phys]))[0]

    async def online_many(self, indices: list[int]) -> list[OnlineResult]:
        """Online a run of blocks: one ``guest-set-memory-blocks`` per ``max_batch``, with whatever else waits."""
        if not self.available:
            down = OnlineResult(Outcome.TRANSIENT, detail=f"the agent of guest {self.name} is not answering")
            return [down] * len(indices)
        known = self.snapshot or {}
        entries = [_Entry(phys, bool(known.get(phys))) for phys in indices]
        self._waiting.extend(entries)
        try:
            async with self._batch_lock:
                # Holding the lock, every unanswered entry of ours is waiting: each flush answers some.
                while self._waiting and any(e.result is None for e in entries):
                    await self._flush()
        finally:
            unsent = {id(e) for e in entries if e.result is None}
            if unsent:
                self._waiting = [w for w in self._waiting if id(w) not in unsent]
        return [e.result or OnlineResult(Outcome.TRANSIENT, detail="not sent") for e in entries]

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
                self.log.debug(f"{self.kind}_verify_failed", guest=self.name, error=str(exc))
        for entry, result in zip(batch, results, strict=True):
            entry.result = map_result(result if result.phys_index == entry.phys else None, after, entry.was_online)
            if result.phys_index != entry.phys:
                self.log.warning(f"{self.kind}_reply_mismatch", guest=self.name, block=entry.phys,
                                 answered=result.phys_index)
            elif entry.result.outcome is Outcome.ONLINED:
                self._claimed[entry.phys] = self.batches  # judged by the next listing asked for after it
            elif result.response == commands.SUCCESS and entry.result.outcome is Outcome.ERROR:
                self.log.warning(f"{self.kind}_false_success", guest=self.name, blocks=[entry.phys], count=1,
                            detail="the agent reported success, the read-back shows the block offline")
