"""The qga backend against real guests: ``hotplugd run --backend qga`` on this machine onlines
memory hot-added into two QEMU guests at once through their qemu-guest-agent.

Both guests boot with ``memhp_default_state=offline`` and run Debian's ``/usr/sbin/qemu-ga``
(installed on this machine, seen by the guests through the shared root). The daemon gets each
guest's agent socket and a QMP monitor of its own. In one daemon's life:

1. a pc-dimm and a virtio-mem grow into both guests at once: every new block comes online;
2. guest A's qemu-ga is killed (SIGKILL, through the harness's control agent), then both kinds
   are hot-added into both guests again: B's blocks all come online while A's agent is still
   dead, and A's new blocks stay offline (nobody else onlines them);
3. A's qemu-ga is started again: every block of A comes online.

Then, in a second daemon's life, guest A's qemu-ga is killed from inside A at the first online
event of an 8 GiB DIMM (64 blocks, one agent request): the request in flight is lost with blocks
still offline, and once the agent is started again A's blocks all come online well before the
agent timeout (the lost request is given up when the agent's port closes).

Timings are printed (``pytest -s``) and kept in ``qga-timings.json`` beside the daemon's log.
"""

from __future__ import annotations

import json
import signal
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from harness import GiB, Guest, GuestProcess
from harness.assets import Assets
from harness.pytest_plugin import require
from onlinetime import kill_on_online
from qga_host import QEMU_GA, QEMU_GA_MISSING, QGA_GUEST, HostDaemon, agent_answers, boot_guests

pytestmark = pytest.mark.vm

BLOCKS_PER_GIB = 8
#: One agent request's timeout in the daemon, raised from the default 5 s so that a guest B held
#: back by A's silent agent cannot finish within B_BOUND: B finishing first shows it was not.
#: (B's 4 GiB take 1 to 8 s here, load average 1 to 8.)
AGENT_TIMEOUT = 60.0
B_BOUND = 40.0
#: How long the test waits for blocks to come online otherwise. A request to A in flight when its
#: agent dies is never answered: A may then be back only after AGENT_TIMEOUT.
ONLINE_TIMEOUT = AGENT_TIMEOUT + 60


@pytest.fixture(scope="module")
def qga_guests(vm_assets: Assets) -> Iterator[list[tuple[Guest, GuestProcess]]]:
    """Two guests booted at once, each with its qemu-ga running (and the handle that kills it)."""
    require(QEMU_GA, QEMU_GA_MISSING)
    # QEMU dies with the *thread* that started it (PR_SET_PDEATHSIG): the pool outlives the guests.
    with ThreadPoolExecutor(2) as pool:
        booted = boot_guests(pool, [QGA_GUEST, QGA_GUEST], vm_assets)
        try:
            yield [(g, proc) for g, proc in booted if proc is not None]
        finally:
            for g, _ in booted:
                g.close()


def _present(guest: Guest) -> set[int]:
    return {b.index for b in guest.agent.memory_blocks()}


def _hot_add_both_kinds(guests: Sequence[Guest], gib: int = 2) -> list[set[int]]:
    """A ``gib`` GiB pc-dimm and ``gib`` GiB more virtio-mem into each guest, back to back;
    the blocks each guest had before."""
    before = [_present(g) for g in guests]
    targets = [g.qmp.virtio_mem_size() + gib * GiB for g in guests]
    for g, target in zip(guests, targets, strict=True):
        g.qmp.hotplug_dimm(gib * GiB)
        g.qmp.resize_virtio_mem(target)
    return before


def _wait_online(guest: Guest, before: set[int], gib: int, timeout: float = ONLINE_TIMEOUT) -> None:
    """Until the 2 x ``gib`` GiB hot-added by :func:`_hot_add_both_kinds` are there and all online."""
    guest.agent.wait_blocks(exclude=before, min_count=2 * gib * BLOCKS_PER_GIB, state="online", timeout=timeout)


def test_hotplugd_on_the_host_onlines_two_guests_through_an_agent_restart(
        qga_guests: list[tuple[Guest, GuestProcess]], tmp_path: Path) -> None:
    (a, a_agent), (b, _) = qga_guests
    daemon = HostDaemon([a, b], tmp_path, {"timeout": f"{AGENT_TIMEOUT:g}s"})
    timings: dict[str, float] = {}
    try:
        daemon.wait_ready()

        # 1. Both kinds into both guests at once, every agent up.
        start = time.monotonic()
        before = _hot_add_both_kinds([a, b])
        for g, known in zip((a, b), before, strict=True):
            _wait_online(g, known, 2)
        timings["dimm 2 GiB + virtio-mem +2 GiB into A and B at once"] = time.monotonic() - start

        # 2. A's agent killed right before the same into both.
        assert a_agent.signal(signal.SIGKILL), "qemu-ga in guest A had already exited"
        assert a_agent.wait(10).returncode == -signal.SIGKILL
        start = time.monotonic()
        before_a, before_b = _hot_add_both_kinds([a, b])
        _wait_online(b, before_b, 2, timeout=B_BOUND)
        timings["guest B, A's agent dead"] = time.monotonic() - start
        # A's kernel added the DIMM's blocks (and virtio-mem's first GiB) and nobody onlined them.
        stuck = a.agent.wait_blocks(exclude=before_a, min_count=2 * BLOCKS_PER_GIB, state="offline", timeout=30)
        assert all(not blk.online for blk in a.agent.memory_blocks() if blk.index not in before_a)

        # 3. A's agent back: the daemon finds it and onlines all of A.
        a.start_qga()
        start = time.monotonic()
        _wait_online(a, before_a, 2)
        timings["guest A after its agent restarted"] = time.monotonic() - start
    finally:
        code = daemon.stop()
    (tmp_path / "qga-timings.json").write_text(json.dumps(timings, indent=2))
    print("\n" + "\n".join(f"{k}: {v:.2f} s" for k, v in timings.items()))
    print(f"guest A: {len(stuck.blocks)} blocks offline while its agent was dead")
    for e in daemon.events():
        if str(e.get("event", "")).startswith(("qga_agent", "phase_finished")):
            print({k: v for k, v in e.items() if k not in ("timestamp", "level", "logger")})
    assert code == 0, daemon.log.read_text()
    for g in (a, b):  # nothing left offline in either guest
        assert [blk.index for blk in g.agent.memory_blocks() if not blk.online] == []
    # The only failures: A's blocks tried while its agent was dead (retried until it came back).
    a_down = [e for e in daemon.errors() if e.get("event") == "online_failed" and e.get("outcome") == "transient"
              and "guest vm0 " in str(e.get("detail"))]
    print(f"{len(a_down)} online_failed (transient) for guest A while its agent was dead")
    assert [e for e in daemon.errors() if e not in a_down] == []


def test_an_agent_killed_in_the_middle_of_a_request_leaves_no_block_behind(
        qga_guests: list[tuple[Guest, GuestProcess]], tmp_path: Path) -> None:
    (a, _), (b, _) = qga_guests
    agent_answers(a)  # started again by the test before, or still up from the boot
    daemon = HostDaemon([a, b], tmp_path, {"timeout": f"{AGENT_TIMEOUT:g}s"})
    blocks = 8 * BLOCKS_PER_GIB
    try:
        daemon.wait_ready()
        before = _present(a)
        killer = kill_on_online(a, comm="qemu-ga")
        a.qmp.hotplug_dimm(8 * GiB)
        assert killer.wait(ONLINE_TIMEOUT).returncode == 0, "the agent was not killed"
        new = [blk for blk in a.agent.memory_blocks() if blk.index not in before]
        left = sum(not blk.online for blk in new)
        assert len(new) == blocks and 0 < left < blocks, f"the kill should land mid-request ({left} offline)"

        a.start_qga()
        start = time.monotonic()
        a.agent.wait_blocks(exclude=before, min_count=blocks, state="online", timeout=B_BOUND)
        back = time.monotonic() - start
    finally:
        code = daemon.stop()
    print(f"\nguest A: agent killed with {left} of {blocks} blocks offline; all online {back:.2f} s after its restart")
    assert code == 0, daemon.log.read_text()
    assert [blk.index for blk in a.agent.memory_blocks() if not blk.online] == []
    assert [e for e in daemon.errors() if "guest vm0 " not in str(e.get("detail"))] == []
