"""The domain model: memory blocks, their events, host topology and online outcomes.

Everything here is plain data. Backends produce it, the scheduler consumes it.

A block belongs to a *domain* as well as a NUMA node: the kernel that onlines
it. The machine hotplugd runs on is the domain ``"host"``; a backend that
onlines memory inside guests (``qga``) makes each guest a domain. Block
indices are unique within a domain; domains online in parallel, each under
its own deferral, queue and worker pools.
"""

from __future__ import annotations

import enum
import errno
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

#: Memory poisoned by a hardware error (Python's errno module lacks it on some builds).
EHWPOISON = getattr(errno, "EHWPOISON", 133)
#: The kernel's memmap costs 64 bytes of ``struct page`` per 4 KiB page: 1/64.
MEMMAP_DIVISOR = 64


class Action(enum.StrEnum):
    """What a block event says happened (the uevent's ``ACTION``)."""

    ADD = "add"
    REMOVE = "remove"
    ONLINE = "online"
    OFFLINE = "offline"


class State(enum.StrEnum):
    """A block's ``state`` as sysfs spells it."""

    ONLINE = "online"
    OFFLINE = "offline"
    GOING_OFFLINE = "going-offline"
    #: Not a sysfs spelling: ``state`` reads offline while ``online`` reads 1. The seed's kernel
    #: (Anolis) sent the ``online`` uevent at its PREPARE step and its final phase is still to run;
    #: only the kernel can finish it (writing ``online`` fails with EINVAL), with no uevent at the end.
    KERNEL_DEFERRED = "kernel-deferred"


class ZoneRequest(enum.StrEnum):
    """What gets written to ``memoryN/state``: the zone the block should join."""

    AUTO = "online"  # let the kernel choose (its online_policy)
    KERNEL = "online_kernel"
    MOVABLE = "online_movable"

    @property
    def zone_name(self) -> str | None:
        """The sysfs zone name this request produces, or None when the kernel picks."""
        return {ZoneRequest.KERNEL: "Normal", ZoneRequest.MOVABLE: "Movable"}.get(self)


#: The domain of the machine hotplugd runs on (every block of a one-domain backend).
HOST_DOMAIN = "host"

#: Zones that count as "kernel" memory when balancing movable against kernel.
KERNEL_ZONES = frozenset({"DMA", "DMA32", "Normal"})


def narrow(requested: ZoneRequest, valid_zones: tuple[str, ...]) -> ZoneRequest:
    """Keep ``requested`` within what sysfs says the block may join (its ``valid_zones``).

    Unknown valid zones leave the request as it is; an impossible request
    falls back to the other explicit zone, and last to the kernel's choice.
    """
    if requested is ZoneRequest.AUTO or not valid_zones:
        return requested
    has_kernel = any(z in KERNEL_ZONES for z in valid_zones)
    has_movable = "Movable" in valid_zones
    if requested is ZoneRequest.MOVABLE:
        return ZoneRequest.MOVABLE if has_movable else (ZoneRequest.KERNEL if has_kernel else ZoneRequest.AUTO)
    return ZoneRequest.KERNEL if has_kernel else (ZoneRequest.MOVABLE if has_movable else ZoneRequest.AUTO)


def zone_matches(requested: ZoneRequest, zone: str | None) -> bool:
    """Did the block land where it was asked to? (AUTO accepts anything.)"""
    if requested is ZoneRequest.AUTO or zone is None:
        return True
    if requested is ZoneRequest.MOVABLE:
        return zone == "Movable"
    return zone in KERNEL_ZONES


@dataclass(frozen=True, slots=True)
class Block:
    """One memory block (``/sys/devices/system/memory/memoryN``) of one domain.

    ``valid_zones`` is what sysfs lists: for an offline block the zones it may
    join (the first is the kernel's default), for an online one its zone.
    ``index`` is unique within ``domain``.
    """

    index: int
    size: int
    node: int = 0
    state: State = State.OFFLINE
    valid_zones: tuple[str, ...] = ()
    domain: str = HOST_DOMAIN
    #: Where its memory comes from: "" for a hot-add (DIMM, virtio-mem, a guest's balloon), the dax
    #: device's name (``dax0.0``) for memory the kmem driver added (CXL expanders, pmem as RAM).
    source: str = ""

    @property
    def start(self) -> int:
        """Physical start address."""
        return self.index * self.size

    @property
    def memmap_bytes(self) -> int:
        """RAM the kernel already spent on this block's ``struct page`` array."""
        return self.size // MEMMAP_DIVISOR

    @property
    def zone(self) -> str | None:
        """The zone of an online block, as far as sysfs told."""
        if self.state is State.ONLINE and self.valid_zones:
            return self.valid_zones[0]
        return None

    def __repr__(self) -> str:
        where = "" if self.domain == HOST_DOMAIN else f"{self.domain}:"
        return f"<Block {where}memory{self.index} node{self.node} [{self.state}] {self.size >> 20} MiB>"


@dataclass(frozen=True, slots=True)
class BlockEvent:
    """A block event. ``block`` is filled for ``add`` (the backend resolves its node and size)."""

    action: Action
    index: int
    block: Block | None = None
    synthetic: bool = False  # replayed (e.g. ``udevadm trigger``), not a real change
    domain: str = HOST_DOMAIN  # for ``add``, the same as ``block.domain``
    #: For ``add``: the backend holds more adds of the same hot-add and yields them at once, so
    #: no phase starts before them (for at most :data:`~hotplugd.engine.deferral.MORE_HOLD` seconds).
    more: bool = False


class RescanReason(enum.StrEnum):
    """Why the whole backend is scanned again (the ``reason`` label of ``hotplugd_rescans_total``)."""

    START = "start"  # the daemon started: coldplug
    OVERFLOW = "overflow"  # the event source lost events (netlink ENOBUFS)
    REQUEST = "request"  # an operator asked (SIGUSR1)
    QUEUE_FULL = "queue_full"  # adds were refused by a full queue
    NOT_REGISTERED = "not_registered"  # a block's event came before sysfs had it (sysfs backend)
    GUEST_GONE = "guest_gone"  # a guest (qga domain) went away or came back


@dataclass(frozen=True, slots=True)
class Rescan:
    """The event source lost events (e.g. netlink ENOBUFS): scan everything again."""

    reason: RescanReason = RescanReason.OVERFLOW

    def __post_init__(self) -> None:
        # A plugin's free text would become an unbounded metric label: only the enum's values pass.
        object.__setattr__(self, "reason", RescanReason(self.reason))


@dataclass(frozen=True, slots=True)
class Topology:
    """What the scheduler needs to know of a domain: the host, or (in ``domains``) each guest."""

    cpus_per_node: dict[int, int]
    mem_available: int
    block_size: int
    #: The kernel onlines added blocks itself (auto_online_blocks != offline):
    #: hotplugd then only verifies and counts.
    kernel_onlines: bool = False
    #: The topology of each other domain, by name (a backend onlining inside guests).
    #: A domain not listed here is described by this topology itself.
    domains: Mapping[str, Topology] = field(default_factory=dict)

    def cpus(self, node: int) -> int:
        return self.cpus_per_node.get(node, 1)

    def for_domain(self, domain: str) -> Topology:
        """The topology of ``domain``'s kernel."""
        return self.domains.get(domain, self)


@dataclass(frozen=True, slots=True)
class Scan:
    """A full scan of the host: every present block and the topology."""

    blocks: list[Block]
    topology: Topology


class Outcome(enum.StrEnum):
    """How one online attempt ended."""

    ONLINED = "onlined"
    ALREADY_ONLINE = "already_online"  # someone else got there first: success
    TRANSIENT = "transient"  # EBUSY, ENOMEM: retry with backoff
    PERMANENT = "permanent"  # EINVAL while still offline, EHWPOISON: leave offline
    GONE = "gone"  # the block was removed
    ERROR = "error"  # the backend raised unexpectedly; the block is marked failed
    #: The seed's kernel holds the block half-online (:attr:`State.KERNEL_DEFERRED`): not an
    #: error and not a retry; hotplugd watches ``state`` until the kernel's final phase ends.
    KERNEL_DEFERRED = "kernel_deferred"

    @property
    def success(self) -> bool:
        return self is Outcome.ONLINED or self is Outcome.ALREADY_ONLINE


@dataclass(frozen=True, slots=True)
class OnlineResult:
    """What a backend reports after one online attempt (re-read from the host)."""

    outcome: Outcome
    zone: str | None = None
    errno: int | None = None
    detail: str = ""


@dataclass(slots=True)
class BlockReport:
    """The scheduler's final word on one block in a phase, passed to observer hooks."""

    block: Block
    result: OnlineResult
    requested: ZoneRequest
    attempts: int = 1
    seconds: float = 0.0
    waited: float = 0.0  # from the add event to the end of the online call


@dataclass(slots=True)
class PhaseInfo:
    """One final phase: which trigger started it and how it is laid out."""

    number: int
    trigger: str
    blocks: int
    bytes: int
    workers: dict[int, int] = field(default_factory=dict)  # by node of ``domain``
    domain: str = HOST_DOMAIN


class Trigger(enum.StrEnum):
    """Why a final phase started (the ``trigger`` label of ``hotplugd_phases_total``)."""

    RATIO_0 = "ratio_0"  # parallel_hotplug_ratio = 0: no deferral
    SERIAL = "serial"  # the backend onlines one block at a time: waiting buys nothing
    QUEUE_FULL = "queue_full"  # the pending queue reached its bound
    OFFLINE_BYTES = "offline_bytes"
    MEMMAP_SHARE = "memmap_share"
    MAX_DEFER = "max_defer"
    SETTLE = "settle"
    #: The kernel onlines this domain's blocks, and left these offline: no memory event of the domain
    #: for ``scheduler.kernel_grace``.
    KERNEL_LEFT = "kernel_left_offline"
    #: The kernel onlines this domain's blocks, but these waited ``scheduler.kernel_grace_max`` while its
    #: events kept coming (a stuck or never-quiet kernel).
    KERNEL_BOUND = "kernel_grace_max"
    #: The kernel onlines this domain's blocks, but these were found offline by the start-up scan while
    #: its auto-online read ``offline`` (before the plan turned it on): added before, no kernel onlines
    #: them, so hotplugd takes them at once, before it reports ready (memory present at boot).
    KERNEL_OFF = "kernel_off_at_start"


@dataclass
class NodeLedger:
    """Online bytes per node in kernel zones and in ZONE_MOVABLE, for the auto-movable ratio."""

    kernel: dict[int, int] = field(default_factory=lambda: defaultdict(int))
    movable: dict[int, int] = field(default_factory=lambda: defaultdict(int))

    @classmethod
    def from_blocks(cls, blocks: Iterable[Block]) -> NodeLedger:
        ledger = cls()
        for block in blocks:
            if block.state is State.ONLINE:
                ledger.record(block, block.zone)
        return ledger

    def record(self, block: Block, zone: str | None) -> None:
        """Account an onlined block; an unknown zone counts as kernel memory (the safe side)."""
        if zone == "Movable":
            self.movable[block.node] += block.size
        else:
            self.kernel[block.node] += block.size

    def unrecord(self, block: Block, zone: str | None) -> None:
        """Take back a ``record`` (a zone reserved for a block whose online then failed or landed elsewhere)."""
        if zone == "Movable":
            self.movable[block.node] -= block.size
        else:
            self.kernel[block.node] -= block.size

    def movable_fits(self, node: int, size: int, ratio_percent: int) -> bool:
        """Would ``size`` more movable bytes keep the node within ``ratio_percent`` of its kernel bytes?"""
        return (self.movable[node] + size) * 100 <= self.kernel[node] * ratio_percent


class Executor(enum.StrEnum):
    """Who onlines a domain's added blocks (the plan's choice, a metric label)."""

    KERNEL = "kernel"  # the kernel's own auto-online, set up by hotplugd; hotplugd verifies
    HOTPLUGD = "hotplugd"  # hotplugd writes each block's state; the kernel's auto-online is kept off


#: The kernel's onlining knobs, as sysfs names them (``/sys/devices/system/memory/`` and
#: ``/sys/module/memory_hotplug/parameters/``); ``parallel_hotplug_ratio`` exists only on the
#: seed's kernel (Anolis), in percent of a node's CPUs.
KNOB_NAMES = ("auto_online_blocks", "online_policy", "auto_movable_ratio", "auto_movable_numa_aware",
              "parallel_hotplug_ratio")


@dataclass(frozen=True, slots=True)
class KernelKnobs:
    """A kernel's onlining knobs as read: name -> value as sysfs spells it (absent: no such knob),
    and the knobs hotplugd cannot write (a read-only /sys, a missing parameter file)."""

    values: Mapping[str, str] = field(default_factory=dict)
    read_only: frozenset[str] = frozenset()

    def get(self, name: str) -> str | None:
        return self.values.get(name)

    def writable(self, name: str) -> bool:
        return name in self.values and name not in self.read_only
