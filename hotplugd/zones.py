"""Zone policy: which zone each block joins, kept within the block's ``valid_zones``.

This module is also the core's built-in ``hotplugd_choose_zone`` implementation
(registered ``trylast``, so a policy plugin can override it).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field

from .config import ZoneConfig
from .hookspecs import hookimpl
from .model import KERNEL_ZONES, Block, State, ZoneRequest


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


def policy_request(block: Block, ledger: NodeLedger, zones: ZoneConfig) -> ZoneRequest:
    """What the configured policy asks for ``block`` on its node."""
    node = zones.for_node(block.node) if zones.nodes else zones
    policy = node.policy
    if policy == "auto":
        return ZoneRequest.AUTO
    if policy == "kernel":
        return ZoneRequest.KERNEL
    if policy == "movable":
        return ZoneRequest.MOVABLE
    if policy == "auto-movable":
        fits = ledger.movable_fits(block.node, block.size, node.auto_movable_ratio)
        return ZoneRequest.MOVABLE if fits else ZoneRequest.KERNEL
    return ZoneRequest.AUTO


def narrow(requested: ZoneRequest, valid_zones: tuple[str, ...]) -> ZoneRequest:
    """Keep ``requested`` within what sysfs says the block may join.

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


@hookimpl(trylast=True)
def hotplugd_choose_zone(block: Block, requested: ZoneRequest) -> ZoneRequest:
    """Built-in: the policy's request, narrowed to the block's valid zones."""
    return narrow(requested, block.valid_zones)
