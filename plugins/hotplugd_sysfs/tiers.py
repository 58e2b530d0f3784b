"""Memory tiers and demotion: where the kernel ranks a node's memory (blocking reads).

A dax device's memory usually lands on a memory-only node in a slower tier than
DRAM (``<root>/devices/virtual/memory_tiering/memory_tierN/nodelist``, 6.1 and
later), and the kernel demotes cold pages to it only while
``<root>/kernel/mm/numa/demotion_enabled`` says ``true``. Only the sysfs side
knows either: they are exported as metrics (:class:`TierCollector`) and shown by
``hotplugd status``.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from .formats import is_gone
from .sysfs import Sysfs

__all__ = ["demotion_enabled", "node_tiers", "parse_nodelist"]

_TIER = re.compile(r"memory_tier(\d+)")


def parse_nodelist(text: str) -> list[int]:
    """``"0-1,4"`` -> [0, 1, 4]; empty -> []."""
    nodes: list[int] = []
    for part in text.strip().split(","):
        if part:
            lo, _, hi = part.partition("-")
            nodes.extend(range(int(lo), int(hi or lo) + 1))
    return nodes


def tiering_dir(root: Path) -> Path:
    return root / "devices/virtual/memory_tiering"


def node_tiers(sysfs: Sysfs) -> dict[int, int]:
    """Node -> the id of its memory tier (a lower id is a faster tier); {} where the kernel has no tiers."""
    try:
        names = sysfs.io.listdir(tiering_dir(sysfs.root))
    except FileNotFoundError:
        return {}
    tiers: dict[int, int] = {}
    for name in names:
        match = _TIER.fullmatch(name)
        if not match:
            continue
        try:
            nodes = parse_nodelist(sysfs.attr(tiering_dir(sysfs.root) / name / "nodelist"))
        except OSError as exc:
            if is_gone(exc):
                continue
            raise
        for node in nodes:
            tiers[node] = int(match.group(1))
    return tiers


def demotion_enabled(sysfs: Sysfs) -> bool | None:
    """``kernel/mm/numa/demotion_enabled`` (``true``/``false``); None where the kernel lacks it."""
    try:
        return sysfs.attr(sysfs.root / "kernel/mm/numa/demotion_enabled") in ("true", "1", "Y", "y")
    except FileNotFoundError:
        return None


class TierCollector:
    """Scrape-time gauges: each node's memory tier, whether demotion is on, and the dax devices.

    Register it on a ``CollectorRegistry`` (``registry.register(TierCollector(backend.dax))``);
    blocks and bytes per device come from the core's census (``source`` label).
    """

    def __init__(self, sysfs: Sysfs, devices: Any) -> None:
        self.sysfs = sysfs
        self.devices = devices  # a callable returning the dax devices' status rows

    def describe(self) -> list[Any]:
        return []  # read at scrape time only: nothing at registration

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import GaugeMetricFamily

        tier = GaugeMetricFamily("hotplugd_memory_tier", "Memory tier of each NUMA node (a lower id is faster), "
                                 "from /sys/devices/virtual/memory_tiering", labels=["node"])
        for node, tier_id in sorted(node_tiers(self.sysfs).items()):
            tier.add_metric([str(node)], tier_id)
        yield tier
        demotion = demotion_enabled(self.sysfs)
        if demotion is not None:
            yield GaugeMetricFamily("hotplugd_numa_demotion_enabled",
                                    "1 when the kernel demotes cold pages to slower tiers "
                                    "(/sys/kernel/mm/numa/demotion_enabled)", value=int(demotion))
        devices = GaugeMetricFamily("hotplugd_dax_device_bytes", "Size of each dax device, by its mode "
                                    "(devdax, system-ram, unbound) and target node",
                                    labels=["device", "mode", "node"])
        for row in self.devices():
            devices.add_metric([row.device, row.mode, "" if row.node is None else str(row.node)], row.size)
        yield devices
