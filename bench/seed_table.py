"""The seed's table: serial, per-block parallel and deferred parallel onlining, computed on the simulated kernels.

A hot-add of 64 GiB and of 1 TiB, in 128 MiB and in 1 GiB blocks, on a 2-node host with 16
CPUs per node, split evenly over the nodes (one virtio-mem device each, as the seed's kernel
is driven). Each cell: time, speed-up over serial onlining in the same run, and the peak of
memory added but not yet usable. Rows:

- serial: mainline, one block at a time (the baseline);
- mainline at ratio 1: 16 workers a node, one global lock: still serial;
- per-block parallel: the seed's first attempt, each block's page init split over 16 workers;
- deferred parallel: the seed's kernel (Anolis), virtio-mem's 1 GiB offline threshold bypassed as it does;
- deferred, 1 GiB bound: the same with the threshold kept (what a user-space onliner gets).

Times are computed from the simulated kernels' costs (plugins/hotplugd_simulated/kernels.py,
sources in bench/README.md), not slept, so 1 TiB takes no longer than 64 GiB to compute.

    .venv/bin/python bench/seed_table.py [--json FILE] [--plot FILE]
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console
from rich.table import Table

from hotplugd import format_bytes
from hotplugd_simulated.predict import Prediction, predict, spread
from hotplugd_simulated.settings import Settings

MiB, GiB = 1 << 20, 1 << 30
PLOT = Path(__file__).with_suffix(".png")
#: (label, kernel, hotplugd ratio, virtio-mem's 1 GiB threshold kept)
ROWS = (("serial", "mainline", 0.0, False), ("mainline, ratio 1", "mainline", 1.0, False),
        ("per-block parallel", "per-block", 1.0, False), ("deferred parallel", "anolis", 1.0, False),
        ("deferred, 1 GiB bound", "anolis", 1.0, True))


@dataclass(frozen=True)
class Cell:
    label: str
    prediction: Prediction
    speedup: float

    def record(self) -> dict[str, object]:
        p = self.prediction
        return {"row": self.label, "kernel": p.kernel, "ratio": p.ratio, "bound": p.bound,
                "block_size": p.block_size, "total": p.total, "seconds": round(p.seconds, 6),
                "speedup": round(self.speedup, 3), "peak_offline": p.peak_offline}


def table(totals: Sequence[int] = (64 * GiB, 1 << 40), block_sizes: Sequence[int] = (128 * MiB, GiB),
          nodes: int = 2, cpus_per_node: int = 16) -> list[Cell]:
    """Every row at every total and block size; speed-up over the serial row of the same column."""
    settings = Settings(nodes=nodes, cpus_per_node=cpus_per_node, scenario=())
    cells = []
    for total in totals:
        for size in block_sizes:
            steps = spread(total, nodes)
            serial = predict(settings, steps, "mainline", 0.0, block_size=size).seconds
            for label, kernel, ratio, bound in ROWS:
                p = predict(settings, steps, kernel, ratio, bound=bound, block_size=size)
                cells.append(Cell(label, p, serial / p.seconds))
    return cells


def render(cells: Sequence[Cell], console: Console) -> None:
    columns = sorted({(c.prediction.total, c.prediction.block_size) for c in cells})
    t = Table(title="hot-add to usable, 2 nodes x 16 CPUs (computed): time, x serial, peak offline")
    t.add_column("onlining")
    for total, size in columns:
        t.add_column(f"{format_bytes(total)} in {format_bytes(size)}", justify="right")
    for label, *_ in ROWS:
        row = {(c.prediction.total, c.prediction.block_size): c for c in cells if c.label == label}
        t.add_row(label, *[f"{row[k].prediction.seconds:.3f} s  {row[k].speedup:.1f}x  "
                           f"{format_bytes(row[k].prediction.peak_offline)}" for k in columns])
    console.print(t)


def plot(cells: Sequence[Cell], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    columns = sorted({(c.prediction.total, c.prediction.block_size) for c in cells})
    fig, ax = plt.subplots(figsize=(11, 4.5))
    width = 0.8 / len(ROWS)
    for i, (label, *_) in enumerate(ROWS):
        row = {(c.prediction.total, c.prediction.block_size): c.speedup for c in cells if c.label == label}
        ax.bar([x + i * width for x in range(len(columns))], [row[k] for k in columns], width, label=label)
    ax.axhline(1.0, color="black", linewidth=0.8)
    ax.set_xticks([x + width * (len(ROWS) - 1) / 2 for x in range(len(columns))],
                  [f"{format_bytes(t)}\n{format_bytes(s)} blocks" for t, s in columns])
    ax.set_yscale("log")
    ax.set_ylabel("speed-up over serial (log)")
    ax.set_title("The seed's result: deferral wins at both block sizes (2 nodes x 16 CPUs, computed)")
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", type=Path, help="write one record per cell here")
    parser.add_argument("--plot", type=Path, default=PLOT, help=f"PNG (default {PLOT.name} next to this script)")
    args = parser.parse_args(argv)
    cells = table()
    console = Console(width=140)
    render(cells, console)
    bound = {c.prediction.block_size: c.speedup for c in cells if c.label == "deferred, 1 GiB bound"}
    console.print(f"virtio-mem's 1 GiB offline threshold kept: {bound[128 * MiB]:.1f}x at 128 MiB blocks (8 blocks "
                  f"a phase), {bound[GiB]:.1f}x at 1 GiB (one block a phase: no chunks; only the two nodes "
                  "overlap). The seed's kernel bypasses the threshold while its ratio is set.")
    if args.json:
        args.json.write_text(json.dumps([c.record() for c in cells], indent=1) + "\n")
    if args.plot:
        plot(cells, args.plot)
        console.print(f"plot: {args.plot}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
