"""Throughput and memory of the whole pipeline: 100,000 blocks through the daemon.

Zero-cost simulated backend, so what is measured is hotplugd itself: event
intake, queue, deferral, the final phase, hooks and metrics. The baseline, run
in the same invocation, is the bare backend: the same host onlining the same
blocks in a plain loop with no daemon around it. Each run is its own process,
so peak RSS is that run's own.

    .venv/bin/python bench/pipeline.py [--blocks N]
Targets (issue 2): >= 50,000 blocks/s and <= 80 MB peak RSS.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time


def sim_table(blocks: int) -> dict:
    return {"nodes": 2, "cpus_per_node": 8, "cost_fixed": 0, "cost_init_per_page": 0, "cost_free_per_page": 0,
            "add_interval": 0, "boot_memory": 0, "block_size": "128MiB",
            "scenario": [{"kind": "dimm", "size": blocks * (128 << 20), "node": 0}]}


def run_daemon(blocks: int) -> dict:
    from functools import partial

    from hotplugd.commands.contributed import Session
    from hotplugd.config import from_mapping
    from hotplugd.observe.logs import configure
    from hotplugd.plugin.manager import make_manager
    from hotplugd_simulated.simulate import simulate

    configure("warning", "json")
    config = from_mapping({"backend": "simulated", "metrics": {"enabled": False},
                           "plugins": {"simulated": sim_table(blocks)}})
    pm = make_manager()
    start = time.perf_counter()
    import io

    from rich.console import Console

    code, summary = simulate(config, partial(Session, pm=pm), progress=False, console=Console(file=io.StringIO()))
    seconds = time.perf_counter() - start
    onlined = summary.onlined
    return {"code": code, "onlined": onlined, "seconds": seconds}


def run_baseline(blocks: int) -> dict:
    import anyio

    from hotplugd.model import ZoneRequest
    from hotplugd_simulated.backend import SimulatedBackend

    async def main() -> int:
        backend = SimulatedBackend.from_options(sim_table(blocks))
        n = 0
        async for event in backend.events():
            result = await backend.online(event.block, ZoneRequest.AUTO)
            n += result.outcome.success
        return n

    start = time.perf_counter()
    onlined = anyio.run(main)
    return {"code": 0, "onlined": onlined, "seconds": time.perf_counter() - start}


def child(kind: str, blocks: int) -> None:
    result = (run_daemon if kind == "daemon" else run_baseline)(blocks)
    result["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps(result))


def measure(kind: str, blocks: int) -> dict:
    out = subprocess.run([sys.executable, __file__, "--child", kind, "--blocks", str(blocks)],
                         check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--blocks", type=int, default=100_000)
    parser.add_argument("--child", choices=["daemon", "baseline"])
    args = parser.parse_args()
    if args.child:
        child(args.child, args.blocks)
        return 0
    base = measure("baseline", args.blocks)
    daemon = measure("daemon", args.blocks)
    for name, r in (("baseline (bare backend loop)", base), ("hotplugd daemon", daemon)):
        print(f"{name:30s} {r['onlined']:>7d} blocks  {r['seconds']:6.2f} s  "
              f"{r['onlined'] / r['seconds']:>9,.0f} blocks/s  peak RSS {r['peak_rss_mb']:5.1f} MB")
    rate = daemon["onlined"] / daemon["seconds"]
    print(f"daemon/baseline time ratio: {daemon['seconds'] / base['seconds']:.2f}x")
    print(f"target >= 50,000 blocks/s: {rate:,.0f} ({'met' if rate >= 50_000 else 'MISSED'}); "
          f"target <= 80 MB: {daemon['peak_rss_mb']:.1f} MB ({'met' if daemon['peak_rss_mb'] <= 80 else 'MISSED'})")
    return 0 if daemon["onlined"] == args.blocks else 1


if __name__ == "__main__":
    sys.exit(main())
