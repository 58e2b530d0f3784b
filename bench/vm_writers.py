"""Onlining through sysfs from 1, 2 and 4 concurrent writers on a real kernel.

Decides the sysfs backend's default ``concurrency``. Each repetition boots a fresh QEMU guest
(TCG, 2 vCPUs, ``memhp_default_state=offline``, nothing else onlining) and, for each writer
count, hot-adds one pc-dimm, waits until all of its blocks exist and are linked to their node
(the add is over), then onlines them from N threads in the guest (block i to thread i mod N,
tests/vm/guest_probe.py ``writers``), timed in the guest. Repeated hot-adds into one guest get
much slower, so the writer counts take turns in the sequence and are compared at the same position.

    .venv/bin/python bench/vm_writers.py [--reps 6] [--size-gib 16] [--threads 1,2,4]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "vm"))

from harness import GiB, Guest, GuestConfig, HarnessError, find_assets  # noqa: E402
from onlinetime import PROBE  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402


def online_with_writers(guest: Guest, size: int, threads: int) -> dict[str, Any]:
    """Hot-add ``size``, wait for the add to finish, online its blocks from ``threads`` writers."""
    before = {b.index for b in guest.agent.memory_blocks()}
    count = size // guest.agent.block_size()
    guest.qmp.hotplug_dimm(size)
    added = guest.agent.wait_blocks(exclude=before, min_count=count, state="offline", timeout=120).blocks
    indices = sorted(b.index for b in added)
    # Every block linked to its node: add_memory() is done (and about to drop the hotplug lock).
    deadline = time.monotonic() + 60
    while any(b.node is None for b in guest.agent.memory_blocks() if b.index in set(indices)):
        if time.monotonic() > deadline:
            raise TimeoutError(f"blocks {indices[0]}..{indices[-1]} never linked to a node")
    out = guest.agent.run([guest.config.python, str(PROBE), "writers", "--threads", str(threads),
                           "--indices", ",".join(map(str, indices))], timeout=300)
    result: dict[str, Any] = json.loads(out.stdout)
    return result


def position_table(results: dict[int, dict[int, list[dict[str, Any]]]], counts: list[int], title: str) -> Table:
    """Median seconds per writer count and position in the guest's sequence; the ratio to 1 writer
    is the geometric mean over positions of the same-position medians (repeated hot-adds slow down)."""
    positions = sorted({p for per in results.values() for p in per})
    t = Table(title=title)
    for col in ("writers", *[f"position {p + 1} (s)" for p in positions], "n", "median write ms", "×1 writer"):
        t.add_column(col, justify="right")
    medians = {n: {p: statistics.median(r["seconds"] for r in results[n][p]) for p in results[n]} for n in counts}
    for n in counts:
        runs = [r for p in results[n] for r in results[n][p]]
        base = medians[counts[0]]
        ratios = [medians[n][p] / base[p] for p in positions if p in medians[n] and p in base]
        geo = statistics.geometric_mean(ratios) if ratios else float("nan")
        t.add_row(str(n), *[f"{medians[n][p]:.3f}" if p in medians[n] else "" for p in positions], str(len(runs)),
                  f"{statistics.median(r['write_median'] for r in runs) * 1000:.2f}", f"{geo:.2f}")
    return t


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reps", type=int, default=6, help="a multiple of the writer counts keeps positions balanced")
    parser.add_argument("--size-gib", type=int, default=16)
    parser.add_argument("--threads", default="1,2,4")
    args = parser.parse_args(argv)
    counts = [int(n) for n in args.threads.split(",")]
    config = GuestConfig(memhp_default_state="offline", memory="2G", slots=8, maxmem="64G", virtio_mem=False)
    console = Console(width=120)
    started, load0 = time.time(), os.getloadavg()
    results: dict[int, dict[int, list[dict[str, Any]]]] = {n: defaultdict(list) for n in counts}
    for rep in range(args.reps):
        order = counts[rep % len(counts):] + counts[:rep % len(counts)]
        with Guest(config, find_assets()) as guest:
            for position, n in enumerate(order):
                r = online_with_writers(guest, args.size_gib * GiB, n)
                results[n][position].append(r)
                console.print(f"rep {rep + 1}, position {position + 1}: {n} writer(s): {r['seconds']:.3f} s, "
                              f"{r['online']}/{r['blocks']} online, median write {r['write_median'] * 1000:.1f} ms, "
                              f"errors {len(r['errors'])}")
    title = f"onlining {args.size_gib} GiB ({args.size_gib * 8} blocks) by writing sysfs state (guest clock)"
    console.print(position_table(results, counts, title))
    console.print(f"{time.strftime('%Y-%m-%d')}, {os.cpu_count()} CPUs, load average {load0[0]:.1f} at start, "
                  f"{os.getloadavg()[0]:.1f} at end, {(time.time() - started) / 60:.1f} min")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except HarnessError as exc:  # not provisioned, a guest that did not boot: one message, no traceback
        sys.exit(f"{Path(__file__).name}: {exc}")
