"""N libvirt domains, each hot-added a 4 GiB DIMM at once: kernel auto-online in the guests against
``hotplugd --backend libvirt`` on this machine, all domains at once and one after the other.

The counterpart of ``qga_guests.py`` where libvirt owns the guests: a private libvirtd
(``tests/libvirt/libvirt_env.py``: its own mount namespace, config, socket and state) runs
TCG domains booting the guest harness (2 vCPUs, 2 GiB, qemu-ga started). Each repetition boots
N fresh domains and runs every onliner in them, in an order that turns with the repetition
(repeated hot-adds into one guest get slower, so no onliner always goes first), one 4 GiB DIMM
per domain per turn. The onliner is set in the guests' own sysfs: ``auto_online_blocks`` is
``online`` for the kernel, ``offline`` for hotplugd. A probe in every guest
(``tests/vm/guest_probe.py online-wait``, bound to the uevent socket) is armed, and the clock
(this machine's) starts right before the first ``attachDeviceFlags`` (libvirt's ``object-add``
and ``device_add``, the same for every onliner); it stops when the last guest reports its last
new block online.

- ``kernel``: the guests' kernels online their memory; nothing runs on the host.
- ``kernel-serial``: the same, the domains hot-added one after the other (each once the previous
  is all online), the times summed.
- ``hotplugd``: ``hotplugd run --backend libvirt`` on the host (default settings, the trial's
  domains selected by name), started before the turn.
- ``hotplugd-serial``: the same with ``parallel_domains = 1`` (one domain onlining at a time).

Ratios are taken within a repetition (paired) and their median reported.

    .venv/bin/python bench/libvirt_guests.py [--reps 3] [--guests 1,2,4] [--json FILE]

Needs ``scripts/provision-vm`` and ``scripts/provision-libvirt``, and root (the private libvirtd
mounts in its own namespace). Aims (issue 26): hotplugd within 1.10x of kernel auto-online at
N = 1; all domains at once close to min(N, cores) times faster than one after the other.
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
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "tests" / "vm"), str(ROOT / "tests" / "libvirt")]

from harness import GiB, HarnessError, find_assets  # noqa: E402
from libvirt_env import HostHotplugd, LibvirtGuest, PrivateLibvirtd, boot_all, require_libvirt  # noqa: E402
from onlinetime import PROBE, Probe, Workload, time_at_once, time_one_after_another  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

AUTO_ONLINE = "/sys/devices/system/memory/auto_online_blocks"
#: onliner → (the guests' auto_online_blocks, hotplugd's settings or None, domains one after the other)
ONLINERS: dict[str, tuple[str, dict[str, Any] | None, bool]] = {
    "kernel": ("online", None, False),
    "kernel-serial": ("online", None, True),
    "hotplugd": ("offline", {}, False),
    "hotplugd-serial": ("offline", {"parallel_domains": 1}, False),
}
NAMES = {"kernel": "kernel auto-online", "kernel-serial": "kernel auto-online, one domain after the other",
         "hotplugd": "hotplugd --backend libvirt (defaults)", "hotplugd-serial": "hotplugd, parallel_domains = 1"}
AT_ONCE = {"kernel-serial": "kernel", "hotplugd-serial": "hotplugd"}
Results = dict[int, dict[str, list[float]]]


def arm(guest: LibvirtGuest, size: int, timeout: float, n: int) -> Probe:
    """Start the probe in ``guest``, bound before the hot-add (tests/vm/onlinetime.py's, with libvirt's hot-add)."""
    fifo, ready = f"/run/probe-{n}.fifo", f"/run/probe-{n}.ready"
    count = size // guest.agent.block_size()
    guest.agent.run(["mkfifo", fifo])
    proc = guest.agent.spawn([guest.config.python, str(PROBE), "online-wait", "--count", str(count),
                              "--ready", ready, "--out", fifo, "--timeout", str(timeout)])
    guest.agent.wait_path(ready, 60)
    return Probe(guest, Workload("dimm", size), fifo, proc, lambda: guest.attach_dimm(size), count)  # type: ignore[arg-type]


def turn(key: str, guests: Sequence[LibvirtGuest], libvirtd: PrivateLibvirtd, size: int, timeout: float,
         workdir: Path, serial_ids: list[int]) -> float:
    """One onliner's turn in the booted domains: seconds to every block online in all of them."""
    policy, settings, one_by_one = ONLINERS[key]
    for g in guests:
        g.agent.write_file(AUTO_ONLINE, policy)
    daemon = None
    if settings is not None:
        daemon = HostHotplugd(libvirtd.uri, workdir, {"domains": [g.name for g in guests], **settings})
        daemon.wait_ready()
        time.sleep(1.0)  # its first listing of every guest done (coldplug): not part of the turn
    try:
        probes = [arm(g, size, timeout, serial_ids.pop()) for g in guests]
        if one_by_one:
            return time_one_after_another(probes, timeout)
        with ThreadPoolExecutor(len(probes)) as waiters:
            return time_at_once(probes, waiters, timeout)
    finally:
        if daemon is not None:
            code = daemon.stop()
            if code != 0 or [e for e in daemon.events() if e.get("level") == "error"]:
                print(f"WARNING {key}: hotplugd exited {code} with errors ({daemon.log})", file=sys.stderr)


def table(results: Results, cores: int, size_gib: int) -> Table:
    t = Table(title=f"dimm {size_gib} GiB into each of N libvirt domains → every block online in all "
                    "(s, this machine's clock)")
    for col in ("N", "onliner", "n", "min", "median", "×kernel", "serial ÷ at once", "ideal"):
        t.add_column(col, justify="left" if col == "onliner" else "right")

    def paired(n: int, num: str, den: str) -> list[float]:
        return [x / y for x, y in zip(results[n].get(num, []), results[n].get(den, []), strict=False)]

    def cell(values: list[float]) -> str:
        return f"{statistics.median(values):.2f}" if values else ""

    for n in sorted(results):
        for key, secs in results[n].items():
            base = "kernel-serial" if ONLINERS[key][2] else "kernel"
            serial = next((k for k, v in AT_ONCE.items() if v == key), "")
            speedup = paired(n, serial, key) if serial and n > 1 else []
            t.add_row(str(n), NAMES[key], str(len(secs)), f"{min(secs):.3f}", f"{statistics.median(secs):.3f}",
                      cell(paired(n, key, base) if key != base else []), cell(speedup),
                      str(min(n, cores)) if speedup else "")
    return t


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--guests", default="1,2,4", help="comma-separated domain counts")
    parser.add_argument("--size-gib", type=int, default=4)
    parser.add_argument("--only", default=",".join(ONLINERS), help=f"comma-separated: {', '.join(ONLINERS)}")
    parser.add_argument("--timeout", type=float, default=180)
    parser.add_argument("--json", type=Path, help="also write every timing here")
    args = parser.parse_args(argv)
    assets = find_assets()
    require_libvirt()
    keys = [k.strip() for k in args.only.split(",")]
    if unknown := set(keys) - set(ONLINERS):
        parser.error(f"unknown onliner(s) {sorted(unknown)}")
    counts, size = [int(x) for x in args.guests.split(",")], args.size_gib * GiB
    console, logs = Console(width=140), Path(tempfile.mkdtemp(prefix="libvirt-bench-"))
    commit = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True,
                            text=True).stdout.strip()
    started, load0 = time.time(), os.getloadavg()
    results: Results = defaultdict(lambda: defaultdict(list))
    ids = list(range(10_000, 0, -1))
    with PrivateLibvirtd() as libvirtd:
        try:
            for rep in range(args.reps):
                for n in counts:
                    here = [k for k in keys if not (n == 1 and k in AT_ONCE)]
                    order = here[rep % len(here):] + here[:rep % len(here)]
                    guests = [LibvirtGuest(libvirtd, f"bench{rep}-{n}-{i}", assets) for i in range(n)]
                    try:
                        boot_all(guests)
                        for key in order:
                            seconds = turn(key, guests, libvirtd, size, args.timeout, logs / f"r{rep}-{n}-{key}", ids)
                            results[n][key].append(seconds)
                            console.print(f"rep {rep + 1}/{args.reps} N={n} {key}: {seconds:.3f} s "
                                          f"(load {os.getloadavg()[0]:.1f})")
                    finally:
                        for g in guests:
                            g.close()
        finally:
            cores = os.cpu_count() or 1
            console.print(table(results, cores, args.size_gib))
            console.print(f"×kernel: against kernel auto-online hot-added the same way; it and serial ÷ at once: "
                          f"medians of the ratios within each repetition; ideal: min(N, {cores} cores)")
            console.print(f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime(started))}, {platform.node()}, "
                          f"{cores} CPUs, commit {commit}, load average {load0[0]:.1f} at start, "
                          f"{os.getloadavg()[0]:.1f} at end, {(time.time() - started) / 60:.1f} min; logs in {logs}")
            if args.json:
                args.json.write_text(json.dumps({"commit": commit, "results": results}, indent=1))
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except HarnessError as exc:
        sys.exit(f"{Path(__file__).name}: {exc}")
