"""Zone policy: what the configured policy asks for each block on its node.

The request is then handed to the ``hotplugd_choose_zone`` hooks; the core's
own implementation (:mod:`hotplugd.plugin.builtin`, ``trylast``) narrows it to
the block's ``valid_zones``.
"""

from __future__ import annotations

from hotplugd.config import ZoneConfig
from hotplugd.model import Block, NodeLedger, ZoneRequest


def policy_request(block: Block, ledger: NodeLedger, zones: ZoneConfig) -> ZoneRequest:
    """What the configured policy asks for ``block`` on its node."""
    node = zones.for_block(block.node, block.source)
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


def promised_zone(block: Block, zones: ZoneConfig) -> ZoneRequest:
    """The zone the policy promises ``block`` whoever onlines it: what a read-back is checked against.

    ``auto`` and ``auto-movable`` promise no zone of their own (the kernel's choice, or the
    ratio's, which the kernel judges over its own accounting).
    """
    policy = zones.for_block(block.node, block.source).policy
    return {"kernel": ZoneRequest.KERNEL, "movable": ZoneRequest.MOVABLE}.get(policy, ZoneRequest.AUTO)
