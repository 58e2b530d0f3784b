"""The decisions of the fake sysfs tree's kernel: knob values, the zone of an online, the seed's deferral.

Pure functions over plain data, so that :mod:`hotplugd_sysfs.testing.fakesysfs` keeps
to files and events. Built from mainline's ``mm/memory_hotplug.c``, simplified,
and from the Anolis code read in ``docs/facts/ANOLIS.md`` (the seed's kernel).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from hotplugd import KERNEL_ZONES, Block, NodeLedger

__all__ = ["AUTO_ONLINE_VALUES", "KNOB_DEFAULTS", "ONLINE_POLICIES", "knob_value", "online_zone", "populated"]

#: What ``auto_online_blocks`` accepts (``memhp_default_state=`` at boot).
AUTO_ONLINE_VALUES = ("offline", "online", "online_kernel", "online_movable")
ONLINE_POLICIES = ("contig-zones", "auto-movable")
#: The knobs of a mainline kernel at their defaults (``parallel_hotplug_ratio``: the seed's kernel only).
KNOB_DEFAULTS = {"auto_online_blocks": "offline", "online_policy": "contig-zones", "auto_movable_ratio": "301",
                 "auto_movable_numa_aware": "Y", "parallel_hotplug_ratio": "0"}
_BOOL = {"Y": "Y", "y": "Y", "1": "Y", "N": "N", "n": "N", "0": "N"}


def knob_value(name: str, value: str) -> str:
    """The value knob ``name`` reads back after ``value`` is written; ValueError (EINVAL) when refused."""
    value = value.strip()
    if name == "auto_online_blocks":
        ok = value in AUTO_ONLINE_VALUES
    elif name == "online_policy":
        ok = value in ONLINE_POLICIES
    elif name in ("auto_movable_ratio", "parallel_hotplug_ratio"):
        ok = value.isdigit()  # unsigned int parameters
        value = str(int(value)) if ok else value
    elif name == "auto_movable_numa_aware":
        ok = value in _BOOL
        value = _BOOL.get(value, value)
    else:
        ok = True
    if not ok:
        raise ValueError(f"{name} does not accept {value!r}")
    return value


def online_zone(online_type: str, knobs: Mapping[str, str], block: Block, online: Iterable[Block]) -> str:
    """The zone an ``online*`` of ``block`` picks (``zone_for_pfn_range``), before valid_zones is checked.

    ``online_kernel`` and ``online_movable`` name it. A plain ``online`` follows
    ``online_policy``: ``contig-zones``, the kernel's default zone (the first one
    ``valid_zones`` lists: Normal in a default tree); ``auto-movable``, Movable
    while the movable memory, this block included, stays within
    ``auto_movable_ratio`` percent of the kernel memory, of the block's node
    (``auto_movable_numa_aware``) or of the whole host; the kernel zone otherwise.
    ``online`` is every online block of the host.
    """
    if online_type == "online_kernel":
        return "Normal"
    if online_type == "online_movable":
        return "Movable"
    zones = block.valid_zones or ("Normal",)
    if knobs.get("online_policy") != "auto-movable":
        return zones[0]
    kernel = next((z for z in zones if z in KERNEL_ZONES), zones[0])
    if "Movable" not in zones:
        return kernel
    ledger = NodeLedger.from_blocks(online)
    if knobs.get("auto_movable_numa_aware", "Y") == "Y":
        movable, kernel_bytes = ledger.movable[block.node], ledger.kernel[block.node]
    else:
        movable, kernel_bytes = sum(ledger.movable.values()), sum(ledger.kernel.values())
    ratio = int(knobs.get("auto_movable_ratio", "301"))
    return "Movable" if (movable + block.size) * 100 <= kernel_bytes * ratio else kernel


def populated(zone: str, node: int, online: Iterable[Block], deferred: Mapping[int, tuple[int, str]]) -> bool:
    """Does ``zone`` of ``node`` have pages already: an online block, or one the seed's kernel holds half-online?

    The seed's kernel defers a block only into a populated zone (``deferred``:
    index -> (node, zone) of each half-online block).
    """
    return any(b.node == node and b.zone == zone for b in online) or (node, zone) in deferred.values()
