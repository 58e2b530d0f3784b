"""Onlining through sysfs from 1, 2 and 4 concurrent writers on a real kernel.

Decides the sysfs backend's default ``concurrency``. Each repetition boots a fresh QEMU guest
(TCG, 2 vCPUs, ``memhp_default_state=offline``, nothing else onlining) and, for each writer
count, hot-adds one pc-dimm, waits until all of its blocks exist and are linked to their node
(the add is over), then onlines them from N threads in the guest (block i to thread i mod N,
tests/vm/guest_probe.py ``writers``), timed in the guest. The writer counts take turns in the
sequence across repetitions (repeated hot-adds into one guest get slower).

    .venv/bin/python bench/vm_writers.py [--reps 3] [--size-gib 16] [--threads 1,2,4]
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

from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

from harness import GiB, Guest, GuestConfig, find_assets  # noqa: E402
from onlinetime import PROBE  # noqa: E402


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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--size-gib", type=int, default=16)
    parser.add_argument("--threads", default="1,2,4")
    args = parser.parse_args(argv)
    counts = [int(n) for n in args.threads.split(",")]
    config = GuestConfig(memhp_default_state="offline", memory="2G", slots=8, maxmem="64G", virtio_mem=False)
    console = Console(width=120)
    started, load0 = time.time(), os.getloadavg()
    results: dict[int, list[dict[str, Any]]] = defaultdict(list)
    for rep in range(args.reps):
        order = counts[rep % len(counts):] + counts[:rep % len(counts)]
        with Guest(config, find_assets()) as guest:
            for n in order:
                r = online_with_writers(guest, args.size_gib * GiB, n)
                results[n].append(r)
                console.print(f"rep {rep + 1}: {n} writer(s): {r['seconds']:.3f} s, {r['online']}/{r['blocks']} "
                              f"online, median write {r['write_median'] * 1000:.1f} ms, errors {len(r['errors'])}")
    t = Table(title=f"onlining {args.size_gib} GiB ({args.size_gib * 8} blocks) by writing sysfs state, guest clock")
    for col in ("writers", "n", "min s", "median s", "ms/block (median)", "median write ms", "×1 writer"):
        t.add_column(col, justify="right")
    base = statistics.median(r["seconds"] for r in results[counts[0]])
    for n in counts:
        secs = [r["seconds"] for r in results[n]]
        med = statistics.median(secs)
        writes = statistics.median(r["write_median"] for r in results[n])
        per_block = med / results[n][0]["blocks"] * 1000
        t.add_row(str(n), str(len(secs)), f"{min(secs):.3f}", f"{med:.3f}", f"{per_block:.2f}",
                  f"{writes * 1000:.2f}", f"{med / base:.2f}")
    console.print(t)
    console.print(f"{time.strftime('%Y-%m-%d')}, {os.cpu_count()} CPUs, load average {load0[0]:.1f} at start, "
                  f"{os.getloadavg()[0]:.1f} at end, {(time.time() - started) / 60:.1f} min")
    return 0


if __name__ == "__main__":
    sys.exit(main())
