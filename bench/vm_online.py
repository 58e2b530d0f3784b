"""Hot-add to every block online on a real kernel: the kernel itself, hotplugd, and a udev rule.

Each onliner gets a fresh QEMU guest (TCG, 2 vCPUs, 2 GiB, the project's guest kernel) per
repetition, in which the same hot-adds run in the same order: a 4 GiB pc-dimm, a 16 GiB
pc-dimm, then virtio-mem from 0 to 16 GiB. Repeated hot-adds into one guest get slower, so
only the same position in the sequence is compared; the onliners take turns within each
repetition so that a busy machine slows them alike. Times are this machine's, from the QMP
command to the guest reporting the last block online (tests/vm/onlinetime.py).

    .venv/bin/python bench/vm_online.py [--reps 3] [--only kernel,hotplugd] [--json FILE]

Needs ``scripts/provision-vm``; the udev onliner unpacks Debian's udev into .vm/udev (never
installed here, only run inside the guests). Aims (issue 4): hotplugd's default config within
1.05x of kernel auto-online (median), at least 3x faster than the udev rule.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "vm"))

from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

from harness import HarnessError, GiB, Guest, GuestConfig, find_assets  # noqa: E402
from daemonctl import GuestDaemon  # noqa: E402
from onliners import (COnliner, HotplugdOnliner, KernelOnliner, NaiveOnliner, Onliner, UdevOnliner,  # noqa: E402
                      build_c_onliner, provision_udev)
from onlinetime import Timing, Workload, time_online  # noqa: E402

WORKLOADS = (Workload("dimm", 4 * GiB), Workload("dimm", 16 * GiB), Workload("virtio-mem", 16 * GiB))


class TreeOnliner(HotplugdOnliner):
    """hotplugd's ``hotplugd`` and ``plugins`` packages as of another commit, first on the guest's PYTHONPATH."""

    def __init__(self, name: str, args: tuple[str, ...], commit: str) -> None:
        super().__init__(name, args)
        self.commit = commit
        self.tree: Path | None = None

    def start(self, guest: Guest) -> None:
        if self.tree is None:  # this machine's / is the guest's root (9p), so a temp dir is seen as it is
            self.tree = Path(tempfile.mkdtemp(prefix=f"hotplugd-{self.commit[:12]}-"))
            archive = subprocess.run(["git", "-C", str(ROOT), "archive", self.commit, "hotplugd", "plugins"],
                                     check=True, capture_output=True).stdout
            subprocess.run(["tar", "-x", "-C", str(self.tree)], input=archive, check=True)
        env = {"PYTHONPATH": f"{self.tree}:{self.tree / 'plugins'}"}
        self.daemon = GuestDaemon.start(guest, *self.args, env=env, textfile=False)


def onliners(hotplugd_args: list[str], alt_args: list[str], alt_commit: str | None = None) -> dict[str, Onliner]:
    alt_name = "hotplugd " + (f"@{alt_commit} " if alt_commit else "") + " ".join(alt_args)
    return {
        "kernel": KernelOnliner(),
        "naive": NaiveOnliner(),
        "c": COnliner(),
        "hotplugd-ratio0": HotplugdOnliner("hotplugd --ratio 0", ("--ratio", "0")),
        "hotplugd": HotplugdOnliner("hotplugd (defaults)" + (f" {' '.join(hotplugd_args)}" if hotplugd_args else ""),
                                    tuple(hotplugd_args)),
        "hotplugd-alt": (TreeOnliner(alt_name, tuple(alt_args), alt_commit) if alt_commit
                         else HotplugdOnliner(alt_name, tuple(alt_args))),
        "udev": UdevOnliner(),
    }


def run_guest(onliner: Onliner) -> tuple[list[Timing], dict[str, Any]]:
    """Boot a fresh guest for ``onliner``, time every workload in order, stop the onliner."""
    config = GuestConfig(memhp_default_state=onliner.memhp_default_state, memory="2G", slots=8, maxmem="64G",
                         virtio_mem=True, virtio_mem_max=16 * GiB)
    with Guest(config, find_assets()) as guest:
        onliner.start(guest)
        timings = [time_online(guest, w) for w in WORKLOADS]
        info = onliner.stop(guest)
    return timings, info


def check(key: str, info: dict[str, Any]) -> None:
    """hotplugd must have onlined every block itself, with no other outcome."""
    blocks = sum(w.size for w in WORKLOADS) // (128 << 20)
    if key.startswith("hotplugd") and info["status"] != f"pending 0 blocks, onlined {blocks}, failed 0":
        print(f"WARNING {key}: expected {blocks} blocks onlined, got {info['status']!r}", file=sys.stderr)


def table(results: dict[str, dict[str, list[Timing]]], names: dict[str, str]) -> Table:
    t = Table(title="hot-add → every block online (s, this machine's clock)")
    for col in ("workload", "onliner", "n", "min", "median", "min ×kernel", "median ×kernel", "tail (guest)"):
        t.add_column(col, justify="left" if col in ("workload", "onliner") else "right")
    for w in WORKLOADS:
        base = results.get("kernel", {}).get(w.label)
        bmin = min(x.seconds for x in base) if base else None
        bmed = statistics.median(x.seconds for x in base) if base else None
        for key, per in results.items():
            runs = per.get(w.label, [])
            if not runs:
                continue
            secs = [r.seconds for r in runs]
            lo, med = min(secs), statistics.median(secs)
            tails = [r.tail for r in runs if r.tail is not None]
            t.add_row(w.label, names[key], str(len(runs)), f"{lo:.3f}", f"{med:.3f}",
                      f"{lo / bmin:.2f}" if bmin else "", f"{med / bmed:.2f}" if bmed else "",
                      f"{statistics.median(tails):.3f}" if tails else "")
    return t


def speedups(results: dict[str, dict[str, list[Timing]]]) -> list[str]:
    lines = []
    for w in WORKLOADS:
        if w.label in results.get("udev", {}) and w.label in results.get("hotplugd", {}):
            udev = statistics.median(x.seconds for x in results["udev"][w.label])
            ours = statistics.median(x.seconds for x in results["hotplugd"][w.label])
            lines.append(f"{w.label}: hotplugd (defaults) is {udev / ours:.1f}x faster than the udev rule (medians)")
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--only", default="kernel,naive,hotplugd-ratio0,hotplugd,udev",
                        help="comma-separated: kernel, naive (a minimal Python onliner, for reference), "
                             "c (a minimal C onliner: the floor for user space; needs a C compiler), "
                             "hotplugd-ratio0, hotplugd, udev")
    parser.add_argument("--hotplugd-arg", action="append", default=[], dest="hotplugd_args",
                        help="extra argument for the 'hotplugd' onliner (repeatable), e.g. --set=scheduler.settle=0.01")
    parser.add_argument("--alt-arg", action="append", default=[], dest="alt_args",
                        help="argument for the 'hotplugd-alt' onliner (repeatable): an A/B variant taking turns "
                             "with the others, e.g. --only kernel,hotplugd,hotplugd-alt --alt-arg=--set=batch.x=1")
    parser.add_argument("--alt-commit", help="run 'hotplugd-alt' from this commit's hotplugd/ and plugins/ "
                                              "(git archive into a temp dir, put first on the guest's PYTHONPATH)")
    parser.add_argument("--json", type=Path, help="also write every timing here")
    parser.add_argument("--from-json", type=Path, help="print the tables of a run saved with --json, run nothing")
    args = parser.parse_args(argv)
    if args.from_json:
        return from_json(Console(width=140), args.from_json)
    all_onliners = onliners(args.hotplugd_args, args.alt_args, args.alt_commit)
    keys = [k.strip() for k in args.only.split(",")]
    unknown = set(keys) - set(all_onliners)
    if unknown:
        parser.error(f"unknown onliner(s) {sorted(unknown)}; known: {', '.join(all_onliners)}")
    if "udev" in keys:
        provision_udev()
    if "c" in keys:
        build_c_onliner()
    console = Console(width=140)
    started, load0 = time.time(), os.getloadavg()
    results: dict[str, dict[str, list[Timing]]] = defaultdict(lambda: defaultdict(list))
    try:
        for rep in range(args.reps):
            order = keys[rep % len(keys):] + keys[:rep % len(keys)]  # take turns
            for key in order:
                timings, info = run_guest(all_onliners[key])
                check(key, info)
                for t in timings:
                    results[key][t.workload.label].append(t)
                console.print(f"rep {rep + 1}/{args.reps} {key}: "
                              + ", ".join(f"{t.workload.label} {t.seconds:.3f} s" for t in timings))
    finally:  # an interrupted run still reports what it measured
        report(console, results, {k: all_onliners[k].name for k in keys}, started, load0, args.json)
    return 0


def timeline(results: dict[str, dict[str, list[Timing]]], names: dict[str, str]) -> Table:
    """The guest's own clock (medians): first ``add`` to first online, per block after, last online to the end."""
    t = Table(title="guest-side timeline (medians, ms)")
    for col in ("workload", "onliner", "first add → first online", "per block after", "last online → end"):
        t.add_column(col, justify="left" if col in ("workload", "onliner") else "right")
    for w in WORKLOADS:
        for key, per in results.items():
            probes = [r.probe for r in per.get(w.label, []) if "first_online" in r.probe and "first_add" in r.probe]
            if not probes:
                continue
            first = statistics.median(p["first_online"] - p["first_add"] for p in probes)
            step = statistics.median((p["last_online"] - p["first_online"]) / max(p["count"] - 1, 1) for p in probes)
            end = statistics.median(p["end"] - p["last_online"] for p in probes)
            t.add_row(w.label, names.get(key, key), f"{first * 1000:.0f}", f"{step * 1000:.1f}", f"{end * 1000:.0f}")
    return t


def from_json(console: Console, path: Path) -> int:
    """Print the tables of a saved run (names are the onliner keys; no load or date: see the run's own output)."""
    by_label = {w.label: w for w in WORKLOADS}
    saved = json.loads(path.read_text())
    results = {k: {w: [Timing(by_label[w], t["seconds"], t["probe"]) for t in ts] for w, ts in per.items()}
               for k, per in saved.items()}
    names = {k: k for k in results}
    console.print(table(results, names))
    console.print(timeline(results, names))
    return 0


def report(console: Console, results: dict[str, dict[str, list[Timing]]], names: dict[str, str], started: float,
           load0: tuple[float, float, float], json_path: Path | None) -> None:
    console.print(table(results, names))
    console.print(timeline(results, names))
    for line in speedups(results):
        console.print(line)
    console.print(f"{time.strftime('%Y-%m-%d', time.localtime(started))}, {platform.node()}, {os.cpu_count()} CPUs, "
                  f"load average {load0[0]:.1f} at start, {os.getloadavg()[0]:.1f} at end, "
                  f"{(time.time() - started) / 60:.1f} min")
    if json_path:
        json_path.write_text(json.dumps({k: {w: [{"seconds": t.seconds, "probe": t.probe} for t in ts]
                                             for w, ts in per.items()} for k, per in results.items()}, indent=1))


if __name__ == "__main__":
    try:
        sys.exit(main())
    except HarnessError as exc:  # not provisioned, a guest that did not boot: one message, no traceback
        sys.exit(f"{Path(__file__).name}: {exc}")
