"""N guests, each hot-added a 4 GiB pc-dimm at once: kernel auto-online in the guests against
``hotplugd --backend qga`` on this machine, all guests at once and one after the other.

Each trial boots N fresh QEMU guests (TCG, 2 vCPUs, 2 GiB, tests/vm's harness) at once, since
repeated hot-adds into one guest get slower (docs/facts/QGA.md). Then a probe in every guest
(``tests/vm/guest_probe.py online-wait``, bound to the uevent socket) is armed, the DIMMs'
memory backends are created, and the clock (this machine's) starts right before the first
``device_add``; it stops when the last guest reports its last new block online. The onliners:

- ``kernel``: the guests boot with ``memhp_default_state=online``; nothing runs on the host.
- ``kernel-serial``: the same, the guests hot-added one after the other (each once the previous
  is all online), the times summed: what "one guest at a time" costs the kernel itself.
- ``hotplugd``: the guests boot with it ``offline`` and run qemu-ga; one ``hotplugd run --backend
  qga`` on the host, default settings, gets every guest (``tests/vm/qga_host.py``).
- ``hotplugd-serial``: the same with ``[plugins.qga] parallel_guests = 1`` (one guest onlining at
  a time). Without that key (hotplugd rejects it) the guests are instead hot-added one after the
  other, each once the previous is all online, and the times are summed ("sequential hot-adds").

The onliners take turns within each repetition, so that other work on the machine slows them
alike; ratios are taken within a repetition (paired) and their median reported. ``--json`` keeps
each probe's guest-side report; ``--from-json`` prints a saved run's tables again.

    .venv/bin/python bench/qga_guests.py [--reps 3] [--guests 1,2,4] [--only kernel,hotplugd] [--json FILE]

Needs ``scripts/provision-vm`` (QEMU, the guest kernel, Debian's qemu-guest-agent). Aims
(issue 9): hotplugd within 1.10x of kernel auto-online; the speed-up of all guests at once over
one after the other close to what the cores allow (min(N, cores): each TCG guest keeps about
one vCPU busy while onlining).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Iterator
from concurrent.futures import Executor, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "vm"))

from harness import GiB, Guest, HarnessError, find_assets  # noqa: E402
from harness.assets import Assets  # noqa: E402
from onlinetime import Workload, arm, time_at_once, time_one_after_another  # noqa: E402
from qga_host import QEMU_GA, QEMU_GA_MISSING, QGA_GUEST, HostDaemon, boot_guests  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

from hotplugd.observe import logs  # noqa: E402

SERIAL_KEY = {"parallel_guests": 1}


@dataclass(frozen=True)
class Onliner:
    """Who onlines, and how the guests boot for it; ``settings`` None: no hotplugd on the host."""

    key: str
    name: str
    memhp_default_state: str
    settings: dict[str, Any] | None = None
    sequential: bool = False  # hot-add the guests one after the other and sum the times


@contextmanager
def host_daemon(onliner: Onliner, guests: list[Guest], workdir: Path) -> Iterator[HostDaemon | None]:
    """hotplugd on this machine for ``onliner`` (None for the kernel), its log kept in ``workdir``."""
    if onliner.settings is None:
        yield None
        return
    workdir.mkdir(parents=True)
    daemon = HostDaemon(guests, workdir, onliner.settings)
    try:
        try:
            daemon.wait_ready()
        except AssertionError as exc:  # one message, no traceback
            raise HarnessError(str(exc)) from None
        yield daemon
    finally:
        code, errors = daemon.stop(), daemon.errors()
        if code != 0 or errors:
            print(f"WARNING {onliner.key}: hotplugd exited {code}, errors {errors} ({daemon.log})", file=sys.stderr)


def trial(onliner: Onliner, n: int, workload: Workload, boots: Executor, waiters: Executor, assets: Assets,
          timeout: float, workdir: Path) -> tuple[float, list[dict[str, Any]]]:
    """Boot ``n`` fresh guests for ``onliner``, hot-add ``workload`` into each, time it; the probes' reports."""
    config = dataclasses.replace(QGA_GUEST, memhp_default_state=onliner.memhp_default_state)
    booted = boot_guests(boots, [config] * n, assets, with_agent=onliner.settings is not None)
    guests = [g for g, _ in booted]
    try:
        with host_daemon(onliner, guests, workdir):
            probes = [arm(g, workload, timeout) for g in guests]
            seconds = (time_one_after_another(probes, timeout) if onliner.sequential
                       else time_at_once(probes, waiters, timeout))
        return seconds, [p.result for p in probes]
    finally:
        for g in guests:
            g.close()


def onliners(serial_supported: bool) -> dict[str, Onliner]:
    serial = (Onliner("hotplugd-serial", "hotplugd, parallel_guests = 1", "offline", dict(SERIAL_KEY))
              if serial_supported else
              Onliner("hotplugd-serial", "hotplugd, sequential hot-adds", "offline", {}, sequential=True))
    return {"kernel": Onliner("kernel", "kernel auto-online", "online"),
            "kernel-serial": Onliner("kernel-serial", "kernel auto-online, sequential hot-adds", "online",
                                     sequential=True),
            "hotplugd": Onliner("hotplugd", "hotplugd (defaults)", "offline", {}),
            "hotplugd-serial": serial}


#: The onliner each "one after the other" variant is compared with.
AT_ONCE = {"kernel-serial": "kernel", "hotplugd-serial": "hotplugd"}


Results = dict[int, dict[str, list[float]]]  # guests → onliner key → seconds per repetition


def _paired(results: Results, n: int, num: str, den: str) -> list[float]:
    return [x / y for x, y in zip(results[n].get(num, []), results[n].get(den, []), strict=False)]


def _cell(values: list[float]) -> str:  # the median of paired ratios
    return f"{statistics.median(values):.2f}" if values else ""


def guest_side(trials: list[dict[str, Any]], n: int, key: str) -> tuple[str, str]:
    """Medians over guests and repetitions, guest seconds: first ``add`` to first online (how soon
    the onliner starts), and last ``add`` to last online (the tail)."""
    reports = [p for t in trials if t["guests"] == n and t["onliner"] == key
               for p in t["probes"] if "first_online" in p]
    if not reports:
        return "", ""
    return (f"{statistics.median(p['first_online'] - p['first_add'] for p in reports):.3f}",
            f"{statistics.median(p['end'] - p['last_add'] for p in reports):.3f}")


def table(results: Results, trials: list[dict[str, Any]], names: dict[str, str], sequential: set[str],
          workload: Workload, cores: int) -> Table:
    t = Table(title=f"{workload.label} into each of N guests at once → every block online in all "
                    "(s, this machine's clock)")
    for col in ("N", "onliner", "n", "min", "median", "×kernel", "serial ÷ at once", "ideal", "start (guest)",
                "tail (guest)"):
        t.add_column(col, justify="left" if col == "onliner" else "right")
    for n in sorted(results):
        for key, secs in results[n].items():
            base = "kernel-serial" if key in sequential else "kernel"  # hot-added the same way
            ratio = _paired(results, n, key, base) if key != base else []
            serial = next((k for k, v in AT_ONCE.items() if v == key), "")
            speedup = _paired(results, n, serial, key) if serial and n > 1 else []
            t.add_row(str(n), names[key], str(len(secs)), f"{min(secs):.3f}", f"{statistics.median(secs):.3f}",
                      _cell(ratio), _cell(speedup), str(min(n, cores)) if speedup else "", *guest_side(trials, n, key))
    return t


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--guests", default="1,2,4", help="comma-separated guest counts")
    parser.add_argument("--size-gib", type=int, default=4, help="the pc-dimm hot-added into each guest")
    parser.add_argument("--only", default="kernel,kernel-serial,hotplugd,hotplugd-serial",
                        help="comma-separated: kernel, kernel-serial, hotplugd, hotplugd-serial "
                             "(the -serial ones are not run for 1 guest: the same as at once)")
    parser.add_argument("--timeout", type=float, default=180, help="seconds before a trial fails")
    parser.add_argument("--json", type=Path, help="also write every timing here")
    parser.add_argument("--logs", type=Path, help="keep hotplugd's logs here (default: a new directory in /tmp)")
    parser.add_argument("--from-json", type=Path, help="print the tables of a run saved with --json, run nothing")
    args = parser.parse_args(argv)
    if args.from_json:
        return reprint(args.from_json, args.size_gib)
    logs.configure("warning")  # the agent pings while guests boot re-sync at debug level
    assets = find_assets()  # HarnessError: not provisioned
    if not QEMU_GA.exists():
        raise HarnessError(QEMU_GA_MISSING)
    counts, workload = [int(x) for x in args.guests.split(",")], Workload("dimm", args.size_gib * GiB)
    console, logs_dir = Console(width=140), args.logs or Path(tempfile.mkdtemp(prefix="qga-bench-"))
    logs_dir.mkdir(parents=True, exist_ok=True)
    refused = HostDaemon.accepts(SERIAL_KEY, logs_dir)
    if refused:
        console.print(f"[yellow]hotplugd refuses parallel_guests ({refused.splitlines()[0]}): "
                      "hotplugd-serial hot-adds the guests one after the other instead[/yellow]")
    all_onliners = onliners(refused is None)
    keys = [k.strip() for k in args.only.split(",")]
    if unknown := set(keys) - set(all_onliners):
        parser.error(f"unknown onliner(s) {sorted(unknown)}; known: {', '.join(all_onliners)}")
    started, load0 = time.time(), os.getloadavg()
    results: Results = defaultdict(lambda: defaultdict(list))
    probes: list[dict[str, Any]] = []
    # QEMU dies with the thread that started it: the boot pool outlives every guest.
    with ThreadPoolExecutor(max(counts)) as boots, ThreadPoolExecutor(max(counts)) as waiters:
        try:
            for rep in range(args.reps):
                for n in counts:
                    here = [k for k in keys if not (n == 1 and k in AT_ONCE)]
                    for key in here[rep % len(here):] + here[:rep % len(here)]:  # take turns
                        seconds, reports = trial(all_onliners[key], n, workload, boots, waiters, assets, args.timeout,
                                                 logs_dir / f"rep{rep + 1}-{n}-{key}")
                        results[n][key].append(seconds)
                        probes.append({"rep": rep, "guests": n, "onliner": key, "seconds": seconds, "probes": reports})
                        console.print(f"rep {rep + 1}/{args.reps} N={n} {key}: {seconds:.3f} s "
                                      f"(load {os.getloadavg()[0]:.1f})")
        finally:  # an interrupted run still reports what it measured
            names = {k: o.name for k, o in all_onliners.items()}
            sequential = sorted(k for k, o in all_onliners.items() if o.sequential)
            report(console, results, probes, names, set(sequential), workload)
            console.print(f"{time.strftime('%Y-%m-%d %H:%M', time.localtime(started))}, {platform.node()}, "
                          f"{os.cpu_count()} CPUs, load average {load0[0]:.1f} at start, {os.getloadavg()[0]:.1f} "
                          f"at end, {(time.time() - started) / 60:.1f} min; hotplugd's logs in {logs_dir}")
            if args.json:
                args.json.write_text(json.dumps({"names": names, "sequential": sequential, "results": results,
                                                  "trials": probes}, indent=1))
    return 0


def reprint(path: Path, size_gib: int) -> int:
    saved = json.loads(path.read_text())
    results: Results = {int(n): per for n, per in saved["results"].items()}
    report(Console(width=160), results, saved["trials"], saved["names"], set(saved["sequential"]),
           Workload("dimm", size_gib * GiB))
    return 0


def report(console: Console, results: Results, trials: list[dict[str, Any]], names: dict[str, str],
           sequential: set[str], workload: Workload) -> None:
    cores = os.cpu_count() or 1
    console.print(table(results, trials, names, sequential, workload, cores))
    console.print("×kernel: against kernel auto-online hot-added the same way; it and serial ÷ at once: medians of "
                  f"the ratios within each repetition; ideal: min(N, {cores} cores); start, tail: guest clock, medians "
                  "over guests, first add to first online, last add to last online")


if __name__ == "__main__":
    try:
        sys.exit(main())
    except HarnessError as exc:  # not provisioned, a guest that did not boot: one message, no traceback
        sys.exit(f"{Path(__file__).name}: {exc}")
