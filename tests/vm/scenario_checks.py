"""Checks shared by the real-kernel scenarios: blocks online and counted, metrics against sysfs, zones."""

from __future__ import annotations

from daemonctl import Metrics
from harness import Guest, MemoryBlock

#: Generous bounds: a stall (virtio-mem waiting forever) or a lost block never finishes.
ONLINE_TIMEOUT = 120


def offline_count(guest: Guest) -> int:
    return sum(1 for b in guest.agent.memory_blocks() if not b.online)


def online_leftovers(guest: Guest) -> None:
    """Online (in the guest, by hand) what earlier tests left offline: a clean start for deferral tests."""
    offline = [b.index for b in guest.agent.memory_blocks() if not b.online]
    if offline:
        script = "for i in \"$@\"; do echo online > /sys/devices/system/memory/memory$i/state; done"
        guest.agent.run(["/bin/sh", "-c", script, "online", *map(str, offline)])
    assert offline_count(guest) == 0


def wait_all_online(guest: Guest, count: int) -> list[MemoryBlock]:
    """Wait until the guest has ``count`` blocks (at least), every one online."""
    return guest.agent.wait_blocks(state="online", min_count=count, timeout=ONLINE_TIMEOUT, interval=0.05).blocks


def assert_all_online(guest: Guest, count: int) -> list[MemoryBlock]:
    """Every block of the guest online, and exactly ``count`` of them (none lost, none extra)."""
    blocks = guest.agent.memory_blocks()
    offline = {b.index: b.state for b in blocks if not b.online}
    assert not offline, f"blocks not online: {offline}"
    assert len(blocks) == count
    return blocks


def assert_consistent(m: Metrics, guest: Guest, *, onlined: int, gone: int = 0) -> None:
    """The daemon's counters agree with sysfs: ``onlined`` blocks, no failure, census = sysfs."""
    assert m.total("hotplugd_blocks_onlined_total") == onlined
    outcomes = m.by_label("hotplugd_online_outcomes_total", "outcome")
    assert outcomes == {k: v for k, v in {"onlined": onlined, "gone": gone}.items() if v}
    for name in ("hotplugd_failed_blocks", "hotplugd_zone_mismatches_total", "hotplugd_pending_blocks",
                 "hotplugd_online_retries_total"):
        assert m.total(name) == 0, name
    blocks = guest.agent.memory_blocks()
    assert m.total("hotplugd_memory_blocks", state="online") == sum(1 for b in blocks if b.online)
    assert m.total("hotplugd_memory_blocks", state="offline") == sum(1 for b in blocks if not b.online)
    assert m.total("hotplugd_memory_census_success") == 1


def zones_of(blocks: list[MemoryBlock]) -> dict[int, str]:
    """An online block's ``valid_zones`` is the zone it is in."""
    return {b.index: " ".join(b.valid_zones) for b in blocks}


def ledger(blocks: list[MemoryBlock], bs: int) -> tuple[int, int]:
    """(kernel, movable) bytes online; an online block's valid_zones is its zone ("none": several)."""
    movable = sum(bs for b in blocks if b.online and b.valid_zones == ("Movable",))
    return sum(bs for b in blocks if b.online) - movable, movable


def auto_movable_zones(blocks: list[MemoryBlock], new: list[int], bs: int, ratio: int) -> dict[int, str]:
    """What auto-movable promises, block by ascending block: movable while movable ≤ ratio% of kernel."""
    kernel, movable = ledger(blocks, bs)
    zones = {}
    for index in sorted(new):
        if (movable + bs) * 100 <= kernel * ratio:
            zones[index], movable = "Movable", movable + bs
        else:
            zones[index], kernel = "Normal", kernel + bs
    return zones
