"""A devdax namespace's creation to its last block online: hotplugd against ``daxctl reconfigure-device``.

One QEMU guest (TCG, 2 vCPUs, 2 GiB on node 0) with ``2 x reps + 1`` NVDIMMs of 2 GiB on
the memory-less node 1 (``docs/facts/DAX.md``; ``tests/vm/harness/nvdimm.py``). The first
is converted untimed: the first memory of a node costs more (the node comes online), and
would weigh on whichever onliner went first. Each repetition then makes two fresh devdax
namespaces (``ndctl create-namespace -f -e namespaceN.0 -m devdax``,
15 blocks of 128 MiB each once in system-ram mode), the onliners taking turns:

- **hotplugd**: running (started and ready before the clock starts) with
  ``[[plugins.sysfs.dax]] device = "daxN.0"``; it converts the device on its bind uevent and
  onlines the blocks by ``[zones.dax]`` (movable);
- **daxctl**: ``daxctl reconfigure-device --mode=system-ram daxN.0`` right after ndctl returns;
  daxctl converts it and onlines the blocks itself (movable by default).

Timed in the guest (``time.monotonic``) from ndctl's start to the moment every new block of
node 1 reads ``online`` (polled every 2 ms), and from ndctl's return to then.

    .venv/bin/python bench/dax_online.py [--reps 3] [--json FILE]

Needs ``scripts/provision-vm`` (the guest kernel and ``.vm/dax-tools``).
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "vm"))

from daemonctl import GuestDaemon  # noqa: E402
from harness import Guest, GuestConfig, find_assets  # noqa: E402
from harness.nvdimm import DaxTools, nvdimm_args  # noqa: E402

BLOCKS = 15
#: Runs in the guest: create the namespace, optionally convert with daxctl, wait for every block online.
GUEST_TIMER = r"""
import json, os, subprocess, sys, time
ndctl, namespace, count, env = sys.argv[1], sys.argv[2], int(sys.argv[3]), json.loads(sys.argv[4])
daxctl = sys.argv[5:]
node = "/sys/devices/system/node/node1"
def online():
    n = 0
    try:
        names = os.listdir(node)
    except FileNotFoundError:  # a memory-less node without CPUs is online only once memory comes
        return 0
    for name in names:
        if name.startswith("memory"):
            try:
                with open(f"{node}/{name}/state") as fh:
                    n += fh.read().startswith("online")
            except OSError:
                pass
    return n
base = online()
full = dict(os.environ, **env)
t0 = time.monotonic()
made = subprocess.run([ndctl, "create-namespace", "-f", "-e", namespace, "-m", "devdax"], env=full,
                      capture_output=True, text=True, check=True)
t1 = time.monotonic()
if daxctl:
    subprocess.run(daxctl, env=full, capture_output=True, text=True, check=True)
deadline = t1 + 300
while online() < base + count:
    if time.monotonic() > deadline:
        sys.exit("timed out waiting for the blocks")
    time.sleep(0.002)
t2 = time.monotonic()
print(json.dumps({"total": t2 - t0, "after_ndctl": t2 - t1, "ndctl": t1 - t0,
                  "device": json.loads(made.stdout)["daxregion"]["devices"][0]["chardev"]}))
"""


def timed(guest: Guest, tools: DaxTools, namespace: str, daxctl: list[str]) -> dict[str, Any]:
    r = guest.agent.run([guest.config.python, "-c", GUEST_TIMER, str(tools.ndctl), namespace, str(BLOCKS),
                         json.dumps(tools.env), *daxctl], timeout=400)
    return dict(json.loads(r.stdout.strip().splitlines()[-1]))


def run_hotplugd(guest: Guest, tools: DaxTools, index: int) -> dict[str, Any]:
    daemon = GuestDaemon.start(guest, "--set", f'plugins.sysfs.dax=[{{device="dax{index}.0"}}]')
    try:
        return timed(guest, tools, f"namespace{index}.0", [])
    finally:
        daemon.stop()


def run_daxctl(guest: Guest, tools: DaxTools, index: int) -> dict[str, Any]:
    return timed(guest, tools, f"namespace{index}.0",
                 [str(tools.daxctl), "reconfigure-device", "--mode=system-ram", f"dax{index}.0"])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--json", type=Path, help="write every timing here")
    args = parser.parse_args(argv)
    assets = find_assets()
    tools = DaxTools.find(assets.project)
    devices = 2 * args.reps + 1
    with tempfile.TemporaryDirectory(prefix="dax-bench-") as tmp:
        config = GuestConfig(memhp_default_state="offline", memory="2G", cpus=2, slots=devices + 1,
                             maxmem=f"{2 + 2 * devices + 2}G", virtio_mem=False,
                             qemu_args=nvdimm_args([Path(tmp) / f"nv{i}" for i in range(devices)]))
        with Guest(config, assets) as guest:
            tools.load_modules(guest)
            warm = run_daxctl(guest, tools, 0)  # node 1's first memory: untimed
            print(f"warm-up daxctl: {warm}", flush=True)
            results: dict[str, list[dict[str, Any]]] = {"hotplugd": [], "daxctl": []}
            for rep in range(args.reps):
                order = [("hotplugd", run_hotplugd), ("daxctl", run_daxctl)]
                if rep % 2:
                    order.reverse()  # take turns: a busier moment slows both alike
                for offset, (name, run) in enumerate(order):
                    results[name].append(run(guest, tools, 1 + 2 * rep + offset))
                    print(f"rep {rep + 1} {name}: {results[name][-1]}", flush=True)
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                            text=True).stdout.strip()
    print(f"\n{time.strftime('%Y-%m-%d')}, {platform.node()}, commit {commit}, median of {args.reps}")
    print("| onliner | namespace creation to last block online | after ndctl returned | ndctl |")
    print("|---|---|---|---|")
    for name, runs in results.items():
        med = {k: statistics.median(r[k] for r in runs) for k in ("total", "after_ndctl", "ndctl")}
        print(f"| {name} | {med['total']:.2f} s | {med['after_ndctl']:.2f} s | {med['ndctl']:.2f} s |")
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
