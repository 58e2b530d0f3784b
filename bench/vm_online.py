"""Hot-add to every block online on a real kernel: the kernel itself, hotplugd, and a udev rule.

Each onliner gets a fresh QEMU guest (TCG, 2 vCPUs, 2 GiB, the project's guest kernel) per
repetition, in which the same hot-adds run in the same order: a 4 GiB pc-dimm, a 16 GiB
pc-dimm, virtio-mem from 0 to 16 GiB, then a 48 GiB pc-dimm backed by a sparse file (the large
case of real hosts: the kernel adds all 384 blocks before it onlines the first). Repeated hot-adds
into one guest get slower, so only the same position in the sequence is compared; the onliners take turns within each
repetition so that a busy machine slows them alike. Times are this machine's, from the QMP
command to the guest reporting the last block online (tests/vm/onlinetime.py).

    .venv/bin/python bench/vm_online.py [--reps 3] [--only kernel,hotplugd] [--json FILE] [--plot FILE]

It also draws blocks online over time after each hot-add, one line per onliner (``--plot``,
default bench/vm_online.png; needs matplotlib, the ``bench`` extra), from each block's online
time in the guest; ``--from-json`` prints and redraws a saved run (runs saved before the probe
gave per-block times have no plot).

Needs ``scripts/provision-vm``; the udev onliner unpacks Debian's udev into .vm/udev (never
installed here, only run inside the guests). Aims (issue 4): hotplugd's default config within
1.05x of kernel auto-online (median), at least 3x faster than the udev rule.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from matplotlib.figure import Figure

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "vm"))

from daemonctl import GuestDaemon  # noqa: E402
from harness import GiB, Guest, GuestConfig, HarnessError, find_assets  # noqa: E402
from onliners import (  # noqa: E402
    COnliner,
    HotplugdOnliner,
    KernelOnliner,
    NaiveOnliner,
    Onliner,
    UdevOnliner,
    build_c_onliner,
    provision_udev,
)
from onlinetime import Timing, Workload, time_online  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

#: The last: a DIMM larger than the guest by far, as real hosts add (a sparse file backs it: no host RAM).
WORKLOADS = (Workload("dimm", 4 * GiB), Workload("dimm", 16 * GiB), Workload("virtio-mem", 16 * GiB),
             Workload("dimm", 48 * GiB, file=True))
PLOT = ROOT / "bench" / "vm_online.png"
#: One colour per onliner, the same in every plot.
COLOURS = {"kernel": "black", "c": "tab:gray", "naive": "tab:olive", "hotplugd": "tab:blue",
           "hotplugd-ratio0": "tab:cyan", "hotplugd-alt": "tab:orange", "hotplugd-self": "tab:green",
           "udev": "tab:red"}


class TreeOnliner(HotplugdOnliner):
    """hotplugd's ``hotplugd`` and ``plugins`` packages as of another commit, first on the guest's PYTHONPATH."""

    def __init__(self, name: str, args: tuple[str, ...], commit: str) -> None:
        super().__init__(name, args)
        self.commit = commit
        self.tree: Path | None = None

    def start(self, guest: Guest) -> None:
        if self.tree is None:
            # Under the checkout, which the guest sees at the same path (its /tmp and /run are tmpfs of its own).
            self.tree = Path(tempfile.mkdtemp(prefix=f"hotplugd-{self.commit[:12]}-", dir=tree_dir()))
            archive = subprocess.run(["git", "-C", str(ROOT), "archive", self.commit, "hotplugd", "plugins"],
                                     check=True, capture_output=True).stdout
            subprocess.run(["tar", "-x", "-C", str(self.tree)], input=archive, check=True)
            entry_shim(self.tree)
        # A tree the guest cannot see would silently leave the checkout's hotplugd measured instead.
        if guest.agent.run(["test", "-f", str(self.tree / "hotplugd" / "__init__.py")], check=False).returncode != 0:
            raise HarnessError(f"{self.tree} is not visible in the guest: cannot run hotplugd @{self.commit}")
        env = {"PYTHONPATH": f"{self.tree}:{self.tree / 'plugins'}"}
        self.daemon = GuestDaemon.start(guest, *self.args, env=env, textfile=False)


def tree_dir() -> Path:
    """Where other commits' trees are unpacked: .vm/trees in the checkout (ignored by git)."""
    path = ROOT / ".vm" / "trees"
    path.mkdir(parents=True, exist_ok=True)
    return path


def entry_shim(tree: Path) -> None:
    """Let a commit's tree run under this .venv's ``hotplugd`` console script when that script imports
    ``main`` from a module the commit does not have (the CLI moved, e.g. ``hotplugd.cli`` to
    ``hotplugd.commands.cli``): a module of that name in the tree that re-exports the tree's own."""
    script = ROOT / ".venv" / "bin" / "hotplugd"
    found = re.search(r"^from ([\w.]+) import main$", script.read_text(), re.MULTILINE) if script.exists() else None
    if found is None:
        return

    def source(module: str) -> Path:
        return tree.joinpath(*module.split(".")).with_suffix(".py")

    wanted = found.group(1)
    have = next((m for m in ("hotplugd.commands.cli", "hotplugd.cli") if source(m).exists()), None)
    if source(wanted).exists() or have is None:
        return
    for package in reversed(source(wanted).relative_to(tree).parents[:-1]):
        (tree / package).mkdir(exist_ok=True)
        (tree / package / "__init__.py").touch()
    source(wanted).write_text(f"from {have} import main  # noqa: F401  (bench/vm_online.py: the script's name)\n")


def onliners(hotplugd_args: list[str], alt_args: list[str], alt_commit: str | None = None,
             hotplugd_commit: str | None = None) -> dict[str, Onliner]:
    alt_name = "hotplugd " + (f"@{alt_commit} " if alt_commit else "") + " ".join(alt_args)
    name = "hotplugd (defaults)" + (f" {' '.join(hotplugd_args)}" if hotplugd_args else "")
    return {
        "kernel": KernelOnliner(),
        "naive": NaiveOnliner(),
        "c": COnliner(),
        "hotplugd-ratio0": HotplugdOnliner("hotplugd --ratio 0", ("--ratio", "0")),
        # the plan forced to hotplugd's own onlining: what hotplugd costs where it has to be the onliner
        "hotplugd-self": HotplugdOnliner("hotplugd onlining itself", ("--set", 'scheduler.onliner="hotplugd"')),
        "hotplugd": (TreeOnliner(name, tuple(hotplugd_args), hotplugd_commit) if hotplugd_commit
                     else HotplugdOnliner(name, tuple(hotplugd_args))),
        "hotplugd-alt": (TreeOnliner(alt_name, tuple(alt_args), alt_commit) if alt_commit
                         else HotplugdOnliner(alt_name, tuple(alt_args))),
        "udev": UdevOnliner(),
    }


def run_guest(onliner: Onliner, workloads: tuple[Workload, ...] = WORKLOADS) -> tuple[list[Timing], dict[str, Any]]:
    """Boot a fresh guest for ``onliner``, time every workload in order, stop the onliner."""
    config = GuestConfig(memhp_default_state=onliner.memhp_default_state, memory="2G", slots=8, maxmem="128G",
                         virtio_mem=True, virtio_mem_max=16 * GiB)
    with Guest(config, find_assets()) as guest:
        onliner.start(guest)
        timings = [timed(guest, onliner, w) for w in workloads]
        info = onliner.stop(guest)
    return timings, info


def timed(guest: Guest, onliner: Onliner, workload: Workload) -> Timing:
    """One hot-add timed; for hotplugd, also the daemon's CPU seconds in the guest from right before the
    hot-add until it is idle again (``probe["daemon_cpu"]``: its read-back may end after the probe's answer)."""
    cpu = onliner.cpu_seconds(guest) if isinstance(onliner, HotplugdOnliner) else None
    timing = time_online(guest, workload, timeout=600)
    if cpu is not None:
        timing.probe["daemon_cpu"] = round(onliner.settled_cpu(guest) - cpu, 2)
    return timing


def check(key: str, info: dict[str, Any]) -> None:
    """hotplugd must have left nothing pending and nothing failed; where it onlines itself (not the
    plan's kernel mode, whose blocks the kernel onlines and hotplugd verifies), every block itself."""
    blocks = sum(w.size for w in WORKLOADS) // (128 << 20)
    wanted = {f"pending 0 blocks, onlined {blocks}, failed 0"}
    if key != "hotplugd-self":  # the plan's kernel mode (the defaults, an A/B variant of them)
        wanted.add("pending 0 blocks, onlined 0, failed 0")
    if key.startswith("hotplugd") and info["status"] not in wanted:
        print(f"WARNING {key}: expected {' or '.join(sorted(wanted))}, got {info['status']!r}", file=sys.stderr)


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
    parser.add_argument("--only", default="kernel,c,hotplugd,hotplugd-self,udev",
                        help="comma-separated: kernel, naive (a minimal Python onliner, for reference), "
                             "c (a minimal C onliner: the floor for user space; needs a C compiler), "
                             "hotplugd-ratio0, hotplugd (its defaults: the plan), hotplugd-self (the plan forced "
                             "to hotplugd's own onlining), udev")
    parser.add_argument("--hotplugd-arg", action="append", default=[], dest="hotplugd_args",
                        help="extra argument for the 'hotplugd' onliner (repeatable), e.g. --set=scheduler.settle=0.01")
    parser.add_argument("--alt-arg", action="append", default=[], dest="alt_args",
                        help="argument for the 'hotplugd-alt' onliner (repeatable): an A/B variant taking turns "
                             "with the others, e.g. --only kernel,hotplugd,hotplugd-alt --alt-arg=--set=batch.x=1")
    parser.add_argument("--alt-commit", help="run 'hotplugd-alt' from this commit's hotplugd/ and plugins/ "
                                              "(git archive into .vm/trees, put first on the guest's PYTHONPATH)")
    parser.add_argument("--hotplugd-commit", help="run 'hotplugd' from this commit's hotplugd/ and plugins/ (as "
                                                  "--alt-commit; default: the working tree)")
    parser.add_argument("--no-large", action="store_true",
                        help="leave out the 48 GiB file-backed DIMM (a quick run; its onliners' status is not checked)")
    parser.add_argument("--json", type=Path, help="also write every timing here")
    parser.add_argument("--plot", type=Path, default=PLOT,
                        help=f"draw blocks online over time here (PNG; default {PLOT.relative_to(ROOT)}; '' for none)")
    parser.add_argument("--from-json", type=Path, help="print the tables of a run saved with --json and redraw its "
                                                       "plot, run nothing")
    args = parser.parse_args(argv)
    plot_path = args.plot if str(args.plot) not in ("", ".") else None
    if args.from_json:
        return from_json(Console(width=140), args.from_json, plot_path)
    all_onliners = onliners(args.hotplugd_args, args.alt_args, args.alt_commit, args.hotplugd_commit)
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
    meta = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(started)), **machine(),
            "commit": measured_commit(args.hotplugd_commit), "reps": args.reps,
            "load_start": round(load0[0], 2)}
    results: dict[str, dict[str, list[Timing]]] = defaultdict(lambda: defaultdict(list))
    try:
        for rep in range(args.reps):
            order = keys[rep % len(keys):] + keys[:rep % len(keys)]  # take turns
            for key in order:
                timings, info = run_guest(all_onliners[key], WORKLOADS[:-1] if args.no_large else WORKLOADS)
                if not args.no_large:
                    check(key, info)
                for t in timings:
                    results[key][t.workload.label].append(t)
                console.print(f"rep {rep + 1}/{args.reps} {key}: "
                              + ", ".join(f"{t.workload.label} {t.seconds:.3f} s" for t in timings))
    finally:  # an interrupted run still reports what it measured
        meta.update(load_end=round(os.getloadavg()[0], 2), minutes=round((time.time() - started) / 60, 1))
        report(console, results, {k: all_onliners[k].name for k in keys}, meta, args.json, plot_path)
    return 0


def machine() -> dict[str, Any]:
    """This machine as the results page names it: CPUs, CPU model, QEMU version."""
    model = ""
    try:
        model = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                      if line.startswith("model name")), "")
    except OSError:
        pass
    try:
        qemu = subprocess.run(["qemu-system-x86_64", "--version"], capture_output=True, text=True,
                              check=False).stdout.splitlines()[0]
    except (OSError, IndexError):
        qemu = ""
    return {"host": platform.node(), "cpus": os.cpu_count(), "cpu": model, "qemu": qemu}


def measured_commit(commit: str | None) -> str:
    """The commit of the hotplugd measured: ``commit``, else HEAD (``+dirty`` when hotplugd/ or plugins/ differ)."""
    def git(*cmd: str) -> str:
        done = subprocess.run(["git", "-C", str(ROOT), *cmd], capture_output=True, text=True, check=False)
        return done.stdout.strip()
    if commit:
        return git("rev-parse", "--short", commit) or commit
    dirty = git("status", "--porcelain", "--", "hotplugd", "plugins")
    return git("rev-parse", "--short", "HEAD") + ("+dirty" if dirty else "")


def timeline(results: dict[str, dict[str, list[Timing]]], names: dict[str, str]) -> Table:
    """The guest's own clock (medians): first ``add`` to first online, per block after, last online to the end;
    and hotplugd's CPU seconds in the guest per hot-add (the daemon and its writer, until idle again)."""
    t = Table(title="guest-side timeline (medians, ms)")
    for col in ("workload", "onliner", "first add → first online", "per block after", "last online → end",
                "daemon CPU s", "daemon CPU ms/block"):
        t.add_column(col, justify="left" if col in ("workload", "onliner") else "right")
    for w in WORKLOADS:
        for key, per in results.items():
            probes = [r.probe for r in per.get(w.label, []) if "first_online" in r.probe and "first_add" in r.probe]
            if not probes:
                continue
            first = statistics.median(p["first_online"] - p["first_add"] for p in probes)
            step = statistics.median((p["last_online"] - p["first_online"]) / max(p["count"] - 1, 1) for p in probes)
            end = statistics.median(p["end"] - p["last_online"] for p in probes)
            cpus = [p["daemon_cpu"] for p in probes if "daemon_cpu" in p]
            cpu = statistics.median(cpus) if cpus else None
            blocks = statistics.median(p["count"] for p in probes)
            t.add_row(w.label, names.get(key, key), f"{first * 1000:.0f}", f"{step * 1000:.1f}", f"{end * 1000:.0f}",
                      f"{cpu:.2f}" if cpu is not None else "", f"{cpu / blocks * 1000:.1f}" if cpu is not None else "")
    return t


def from_json(console: Console, path: Path, plot_path: Path | None = PLOT) -> int:
    """Print the tables of a saved run and redraw its plot (runs saved before per-block times: no plot)."""
    names, results, meta = load(path)
    console.print(table(results, names))
    console.print(timeline(results, names))
    if meta:
        console.print(describe(meta))
    if plot_path is not None:
        drawn = plot(results, names, plot_path, caption(meta))
        console.print(f"plot: {plot_path}" if drawn else "no plot: this run has no per-block online times")
    return 0


def load(path: Path) -> tuple[dict[str, str], dict[str, dict[str, list[Timing]]], dict[str, Any]]:
    """A run saved with ``--json``: onliner names, timings, and how it ran (empty for older runs, whose
    file holds the timings alone and whose names are the onliner keys)."""
    by_label = {w.label: w for w in WORKLOADS}
    saved = json.loads(path.read_text())
    runs, meta = (saved["results"], saved.get("meta", {})) if "results" in saved else (saved, {})
    results = {k: {w: [Timing(by_label[w], t["seconds"], t["probe"]) for t in ts] for w, ts in per.items()}
               for k, per in runs.items()}
    names = {k: saved.get("names", {}).get(k, k) for k in results}
    return names, results, meta


def describe(meta: dict[str, Any]) -> str:
    """One line: when, where and what a run measured."""
    parts = [meta.get("date", ""), f"commit {meta['commit']}" if meta.get("commit") else "",
             f"{meta['cpus']} CPUs {meta.get('cpu', '')}".strip() if meta.get("cpus") else "",
             meta.get("qemu", ""), f"{meta['reps']} repetitions" if meta.get("reps") else ""]
    if "load_start" in meta:
        parts.append(f"load average {meta['load_start']:.1f} at start"
                     + (f", {meta['load_end']:.1f} at end" if "load_end" in meta else ""))
    if "minutes" in meta:
        parts.append(f"{meta['minutes']:.1f} min")
    return ", ".join(p for p in parts if p)


def caption(meta: dict[str, Any]) -> str:
    """``describe`` short enough for the plot's title."""
    qemu = re.search(r"version (\S+)", meta.get("qemu", ""))
    parts = [meta.get("date", ""), f"hotplugd {meta['commit']}" if meta.get("commit") else "",
             f"{meta['cpus']} CPUs" if meta.get("cpus") else "", f"QEMU {qemu.group(1)} TCG" if qemu else "",
             f"{meta['reps']} repetitions" if meta.get("reps") else ""]
    if "load_start" in meta:
        parts.append(f"load {meta['load_start']:.1f}" + (f" to {meta['load_end']:.1f}" if "load_end" in meta else ""))
    return ", ".join(p for p in parts if p)


def curves(results: dict[str, dict[str, list[Timing]]]) -> dict[str, dict[str, list[float]]]:
    """Per workload and onliner, the median repetition's blocks in the order they came online, each as
    seconds after the hot-add on this machine's clock.

    The probe stamps each block's ``online`` event on the guest's clock; the guest's ``end`` (its
    answer) is put at this machine's stop, ``seconds`` after the hot-add. Repetitions whose probe
    gave no per-block times are left out."""
    out: dict[str, dict[str, list[float]]] = {}
    for w in WORKLOADS:
        for key, per in results.items():
            runs = sorted((r for r in per.get(w.label, []) if r.probe.get("online_at")), key=lambda r: r.seconds)
            if not runs:
                continue
            run = runs[(len(runs) - 1) // 2]
            out.setdefault(w.label, {})[key] = [run.seconds - (run.probe["end"] - t) for _, t in run.probe["online_at"]]
    return out


def plot(results: dict[str, dict[str, list[Timing]]], names: dict[str, str], path: Path,
         note: str = "") -> Figure | None:
    """Draw blocks online over time after each hot-add, one panel per workload and one line per onliner
    (its median repetition), into ``path`` (PNG); the figure, or None when no run has per-block times."""
    data = curves(results)
    if not data:
        return None
    from matplotlib.figure import Figure  # the bench extra; only the plot needs it

    labels = [w.label for w in WORKLOADS if w.label in data]
    fig = Figure(figsize=(4.2 * len(labels), 3.6), dpi=90, layout="constrained")
    axes = fig.subplots(1, len(labels), squeeze=False)[0]
    for ax, label in zip(axes, labels, strict=True):
        for key, times in data[label].items():
            ax.step([0.0, *times], range(len(times) + 1), where="post", label=names.get(key, key),
                    color=COLOURS.get(key), linewidth=1.4)
        ax.set_title(label, fontsize=10)
        ax.set_xlabel("seconds after the hot-add")
        ax.set_xlim(left=0)
        ax.set_ylim(bottom=0)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("blocks online (128 MiB)")
    axes[0].legend(fontsize=8, loc="lower right")
    fig.suptitle("hot-add to every block online, median repetition" + (f"\n{note}" if note else ""), fontsize=9)
    fig.savefig(path)
    return fig


def report(console: Console, results: dict[str, dict[str, list[Timing]]], names: dict[str, str],
           meta: dict[str, Any], json_path: Path | None, plot_path: Path | None) -> None:
    console.print(table(results, names))
    console.print(timeline(results, names))
    for line in speedups(results):
        console.print(line)
    console.print(describe(meta))
    if json_path:
        json_path.write_text(json.dumps({
            "meta": meta, "names": names,
            "results": {k: {w: [{"seconds": t.seconds, "probe": t.probe} for t in ts] for w, ts in per.items()}
                        for k, per in results.items()}}, indent=1))
    if plot_path is not None:
        try:
            drawn = plot(results, names, plot_path, caption(meta))
        except ImportError as exc:
            console.print(f"no plot ({exc}): pip install -e '.[bench]'")
        else:
            console.print(f"plot: {plot_path}" if drawn else "no plot: no per-block online times")


if __name__ == "__main__":
    try:
        sys.exit(main())
    except HarnessError as exc:  # not provisioned, a guest that did not boot: one message, no traceback
        sys.exit(f"{Path(__file__).name}: {exc}")
