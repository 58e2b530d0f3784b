"""hotplugd on a real kernel (issue 4): bursts, virtio-mem, coldplug, restart, conflict, zones.

Each scenario runs ``hotplugd run --backend sysfs`` in a QEMU guest and checks, from the guest's
sysfs: every block online (in the intended zone), no block lost; and from the daemon's metrics
textfile: blocks onlined and outcomes equal to what sysfs shows, no error outcome.

Guests: the session's ``guest`` (the bursts, one virtio-mem growth; blocks accumulate, so
every count is taken relative to the state before), ``autoonline_guest`` (the conflict), and
``spare``, a guest of this module's own for the zone, coldplug, restart and other virtio-mem
scenarios: the bursts use up the session guest's DIMM space (64 GiB less its 16 GiB virtio-mem
device). virtio-mem devices only grow here: shrinking online memory back is slow and may fail,
and a device larger than this machine's RAM cannot be allocated.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from daemonctl import GuestDaemon
from harness import GiB, Guest, GuestConfig
from harness.assets import Assets
from onlinetime import kill_on_online
from scenario_checks import (
    ONLINE_TIMEOUT,
    assert_all_online,
    assert_consistent,
    auto_movable_zones,
    ledger,
    offline_count,
    online_leftovers,
    wait_all_online,
    zones_of,
)

pytestmark = pytest.mark.vm

MiB = 1 << 20
#: These scenarios exercise hotplugd's own onlining (its queue, phases, restarts and counters): the
#: plan is pinned to it. Where the kernel onlines instead: test_kernel_mode.py.
ONLINES_ITSELF = ("--set", 'scheduler.onliner="hotplugd"')


def start_onliner(guest, *args: str, **kwargs) -> GuestDaemon:
    return GuestDaemon.start(guest, *ONLINES_ITSELF, *args, **kwargs)


SPARE_CONFIG = GuestConfig(memhp_default_state="offline", memory="2G", slots=8, maxmem="64G",
                           virtio_mem=True, virtio_mem_max=16 * GiB)


@pytest.fixture(scope="module")
def spare(vm_assets: Assets) -> Iterator[Guest]:
    """A guest of this module's own: 46 GiB of DIMM space, 16 GiB of virtio-mem."""
    g = Guest(SPARE_CONFIG, vm_assets).start()
    yield g
    g.close()


# -- 1. pc-dimm bursts ----------------------------------------------------------------------------


@pytest.mark.parametrize("ratio", ["0", "1"])
def test_pc_dimm_bursts_go_online(guest: Guest, ratio: str) -> None:
    """4 GiB then 16 GiB DIMMs: every block online, counted once, by the ratio's own phases."""
    bs = guest.agent.block_size()
    count = len(guest.agent.memory_blocks())
    leftover = offline_count(guest)  # earlier tests may leave offline blocks: coldplugged at start
    daemon = start_onliner(guest, "--ratio", ratio)
    for size in (4 * GiB, 16 * GiB):
        guest.qmp.hotplug_dimm(size)
        count += size // bs
        wait_all_online(guest, count)
    daemon.stop()

    assert_all_online(guest, count)
    m = daemon.metrics()
    assert_consistent(m, guest, onlined=leftover + 20 * GiB // bs)
    assert m.total("hotplugd_uevents_received_total", action="add") == 20 * GiB // bs
    # ratio 0 never defers; ratio 1 on a one-at-a-time backend onlines at once too ("serial").
    assert set(m.by_label("hotplugd_phases_total", "trigger")) == {"ratio_0" if ratio == "0" else "serial"}


# -- 6. another onliner: the kernel ----------------------------------------------------------------


def test_kernel_auto_online_that_matches_the_plan_is_verified_not_reported(autoonline_guest: Guest) -> None:
    """A guest booted with the kernel's auto-online on: with the default plan the kernel keeps onlining
    (its knobs already say what zone policy auto needs), and hotplugd reads back and counts every block.
    Not a conflict: the kernel's auto-online contradicts nothing hotplugd would set."""
    guest = autoonline_guest
    bs = guest.agent.block_size()
    count = len(guest.agent.memory_blocks()) + GiB // bs
    daemon = GuestDaemon.start(guest)
    guest.qmp.hotplug_dimm(GiB)
    wait_all_online(guest, count)
    m = daemon.wait_metrics(lambda m: m.total("hotplugd_kernel_onlined_blocks_total") == GiB // bs,
                            what="the kernel's onlines verified")
    daemon.stop()

    assert_all_online(guest, count)
    m = daemon.metrics()
    assert m.total("hotplugd_conflicting_onliners") == 0
    assert m.total("hotplugd_blocks_onlined_total") == 0  # not one write of hotplugd's
    assert m.total("hotplugd_blocks_verified_total") == GiB // bs
    assert m.total("hotplugd_zone_mismatches_total") == 0
    assert not [e for e in daemon.logs() if e.get("event") == "conflict"]
    assert not [e for e in daemon.logs() if e.get("level") == "error"]


# -- 7. zone policy ---------------------------------------------------------------------------------


def test_movable_policy_onlines_into_zone_movable(spare: Guest) -> None:
    bs = spare.agent.block_size()
    before = {b.index for b in spare.agent.memory_blocks()}
    daemon = start_onliner(spare, "--set", 'zones.policy="movable"')
    spare.qmp.hotplug_dimm(2 * GiB)
    wait_all_online(spare, len(before) + 2 * GiB // bs)
    daemon.stop()

    new = [b for b in assert_all_online(spare, len(before) + 2 * GiB // bs) if b.index not in before]
    assert set(zones_of(new).values()) == {"Movable"}
    m = daemon.metrics()
    assert_consistent(m, spare, onlined=len(new))
    assert m.total("hotplugd_blocks_onlined_total", zone="Movable") == len(new)


def test_auto_movable_policy_keeps_the_ratio(spare: Guest) -> None:
    """A ratio that lets half of a 4 GiB DIMM be movable: the DIMM is split, block by block, as promised."""
    bs = spare.agent.block_size()
    online_leftovers(spare)
    start = spare.agent.memory_blocks()
    before = {b.index for b in start}
    kernel, movable = ledger(start, bs)
    ratio = -(-(movable + 2 * GiB) * 100 // kernel)  # ceil: movable may grow by 2 GiB before kernel blocks
    daemon = start_onliner(spare, "--set", 'zones.policy="auto-movable"',
                               "--set", f"zones.auto_movable_ratio={ratio}")
    spare.qmp.hotplug_dimm(4 * GiB)
    wait_all_online(spare, len(before) + 4 * GiB // bs)
    daemon.stop()

    blocks = assert_all_online(spare, len(before) + 4 * GiB // bs)
    new = [b.index for b in blocks if b.index not in before]
    got = {i: z for i, z in zones_of(blocks).items() if i in new}
    assert got == auto_movable_zones(start, new, bs, ratio)
    assert {"Movable", "Normal"} <= set(got.values())  # the cap was reached within this DIMM
    kernel, movable = ledger(blocks, bs)
    assert movable * 100 <= kernel * ratio
    assert_consistent(daemon.metrics(), spare, onlined=len(new))


# -- 4. coldplug ------------------------------------------------------------------------------------


def test_blocks_added_before_start_are_onlined_at_start(spare: Guest) -> None:
    bs = spare.agent.block_size()
    before = {b.index for b in spare.agent.memory_blocks()}
    spare.qmp.hotplug_dimm(GiB)
    spare.agent.wait_blocks(exclude=before, min_count=GiB // bs, state="offline", timeout=ONLINE_TIMEOUT)
    leftover = offline_count(spare)

    daemon = start_onliner(spare)
    wait_all_online(spare, len(before) + GiB // bs)
    daemon.stop()

    assert_all_online(spare, len(before) + GiB // bs)
    m = daemon.metrics()
    assert_consistent(m, spare, onlined=leftover)
    assert m.total("hotplugd_rescans_total", reason="start") == 1
    assert m.total("hotplugd_uevents_received_total", action="add") == 0  # all came from the start scan


# -- 5. restart -------------------------------------------------------------------------------------


def test_killed_during_a_phase_and_restarted_onlines_every_block(spare: Guest) -> None:
    bs = spare.agent.block_size()
    before = {b.index for b in spare.agent.memory_blocks()}
    first = start_onliner(spare, "--ratio", "0")
    # Killed from inside the guest at the DIMM's first online event: from this machine, the
    # round trips to see it and to kill took as long as onlining all 128 blocks.
    killer = kill_on_online(spare, pid=first.proc.pid)
    spare.qmp.hotplug_dimm(16 * GiB)
    assert killer.wait(ONLINE_TIMEOUT).returncode == 0
    first.kill()  # reaps it
    left = offline_count(spare)
    assert 0 < left < 16 * GiB // bs, "the kill should land in the middle of the phase"

    second = start_onliner(spare, "--ratio", "0")
    wait_all_online(spare, len(before) + 16 * GiB // bs)
    second.stop()

    assert_all_online(spare, len(before) + 16 * GiB // bs)
    assert_consistent(second.metrics(), spare, onlined=left)


# -- 3. virtio-mem shrinking while blocks are queued ----------------------------------------------


def test_virtio_mem_shrink_drops_queued_blocks(spare: Guest) -> None:
    """Blocks queued (long deferral) are removed by a shrink: dropped, no error; the daemon goes on."""
    bs = spare.agent.block_size()
    online_leftovers(spare)
    start = spare.qmp.virtio_mem_size()
    before = {b.index for b in spare.agent.memory_blocks()}
    daemon = start_onliner(spare, "--ratio", "1", "--set", 'scheduler.defer="always"',
                               "--set", "scheduler.settle=3600", "--set", "scheduler.max_defer=3600",
                               "--set", 'scheduler.max_offline_bytes="1GiB"', "--set", 'zones.policy="movable"')
    queued = 512 * MiB // bs
    spare.qmp.resize_virtio_mem(start + 512 * MiB)
    spare.agent.wait_blocks(exclude=before, min_count=queued, state="offline", timeout=ONLINE_TIMEOUT)
    daemon.wait_metrics(lambda m: m.total("hotplugd_pending_blocks") == queued, what="blocks queued")

    spare.qmp.resize_virtio_mem(start)
    spare.agent.wait_blocks(exclude=before, max_count=0, timeout=ONLINE_TIMEOUT)
    m = daemon.wait_metrics(lambda m: m.total("hotplugd_uevents_received_total", action="remove") == queued,
                            what="the remove events")
    assert m.total("hotplugd_pending_blocks") == 0
    assert m.total("hotplugd_online_outcomes_total") == 0

    # Still working: 1 GiB offline (virtio-mem's own limit) reaches max_offline_bytes and goes online.
    spare.qmp.resize_virtio_mem(start + GiB)
    wait_all_online(spare, len(before) + GiB // bs)
    daemon.stop()
    assert_all_online(spare, len(before) + GiB // bs)
    m = daemon.metrics()
    assert_consistent(m, spare, onlined=GiB // bs)
    new = [b for b in spare.agent.memory_blocks() if b.index not in before]
    assert set(zones_of(new).values()) == {"Movable"}
    assert m.total("hotplugd_phases_total", trigger="offline_bytes") >= 1


# -- 2. virtio-mem growing with blocks left offline -------------------------------------------------


DEFERRED = ("--ratio", "1", "--set", 'scheduler.defer="always"')


@pytest.mark.parametrize(("where", "deferral"), [("guest", ()), ("spare", DEFERRED)], ids=["defaults", "deferred"])
def test_virtio_mem_grows_by_8_gib_without_stalling(request: pytest.FixtureRequest, where: str,
                                                     deferral: tuple[str, ...]) -> None:
    """virtio-mem plugs 1 GiB and waits for it to be onlined: the (bounded) deferral must keep it moving."""
    g: Guest = request.getfixturevalue(where)  # 8 GiB each: two growths do not fit in one 16 GiB device
    bs = g.agent.block_size()
    online_leftovers(g)
    start = g.qmp.virtio_mem_size()
    count = len(g.agent.memory_blocks()) + 8 * GiB // bs
    daemon = start_onliner(g, *deferral)
    g.qmp.resize_virtio_mem(start + 8 * GiB)
    wait_all_online(g, count)
    assert g.qmp.virtio_mem_size() == start + 8 * GiB
    daemon.stop()

    assert_all_online(g, count)
    m = daemon.metrics()
    assert_consistent(m, g, onlined=8 * GiB // bs)
    triggers = set(m.by_label("hotplugd_phases_total", "trigger"))
    assert triggers <= ({"serial"} if not deferral else {"settle", "offline_bytes", "max_defer", "memmap_share"})
