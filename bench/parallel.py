"""The final phase's parallelism: 8192 x 128 MiB blocks on a simulated 16-CPU kernel that onlines in parallel.

That kernel is the simulated backend's idealised ``lock = "none"`` model, kept for this bench
and the engine's parallel-phase tests: none of the three modelled kernels (mainline, per-block,
anolis) onlines user-space writes in parallel; it measures the engine's phase, not a kernel.

At ratio 1 the phase gets 16 workers; its ideal time is blocks x cost / workers.
The baseline measured in the same run is that ideal, and also the same blocks
onlined serially (ratio 0) for scale. Prints phase time / ideal.

    .venv/bin/python bench/parallel.py [--blocks 8192]
Target (issue 2): phase time <= 1.25 x the ideal.
"""

from __future__ import annotations

import argparse
import io
import sys
from functools import partial

from rich.console import Console

from hotplugd.commands.contributed import Session
from hotplugd.config import from_mapping
from hotplugd.observe.logs import configure
from hotplugd.plugin.manager import make_manager
from hotplugd.testing import HookRecorder
from hotplugd_simulated.simulate import simulate

BLOCK = 128 << 20


def run(blocks: int, ratio: float) -> tuple[float, int, dict[int, int], float]:
    sim = {"nodes": 1, "cpus_per_node": 16, "lock": "none", "boot_memory": 0, "add_interval": 0,
           "scenario": [{"kind": "dimm", "size": blocks * BLOCK}]}
    # one phase for the whole burst: the bounds must not split it
    config = from_mapping({"backend": "simulated", "metrics": {"enabled": False},
                           "scheduler": {"parallel_hotplug_ratio": ratio, "max_offline_bytes": "100TiB",
                                         "max_memmap_share": 1.0, "settle": 0.05, "max_defer": 60},
                           "plugins": {"simulated": sim}})
    recorder = HookRecorder()
    pm = make_manager()
    pm.register(recorder, name="recorder")
    simulate(config, partial(Session, pm=pm), progress=False, console=Console(file=io.StringIO()))
    finished = [c[1] for c in recorder.calls if c[0] == "hotplugd_phase_finished"]
    seconds = sum(f["seconds"] for f in finished)
    onlined = sum(1 for r in recorder.reports if r.result.outcome.success)
    cost = pm.get_plugin("simulated")  # the plugin module
    block_cost = cost.Settings(**{"block_size": BLOCK}).block_cost()
    return seconds, onlined, recorder.phases[0].workers, block_cost


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--blocks", type=int, default=8192)
    args = parser.parse_args()
    configure("warning", "json")
    seconds, onlined, workers, block_cost = run(args.blocks, 1.0)
    serial_blocks = max(1, args.blocks // 8)
    serial_seconds, _, _, _ = run(serial_blocks, 0.0)
    n = sum(workers.values())
    ideal = args.blocks * block_cost / n
    print(f"blocks {onlined}/{args.blocks}, workers {workers}, cost per block {block_cost * 1e3:.3f} ms")
    print(f"ideal (blocks x cost / workers): {ideal:.3f} s")
    print(f"final phase at ratio 1:          {seconds:.3f} s  -> {seconds / ideal:.3f}x the ideal (target <= 1.25x)")
    print(f"serial (ratio 0), {serial_blocks} blocks:  {serial_seconds:.3f} s  -> "
          f"{serial_seconds / (serial_blocks * block_cost):.3f}x its ideal; speed-up at ratio 1: "
          f"{(serial_seconds / serial_blocks) / (seconds / args.blocks):.1f}x per block")
    return 0 if onlined == args.blocks else 1


if __name__ == "__main__":
    sys.exit(main())
