"""``hotplugd simulate``: a scenario on the simulated backend, through the real daemon and scheduler.

The simulated plugin contributes the command (``hotplugd_add_commands``); it drives the
daemon through the public :class:`hotplugd.CommandContext`, like any plugin's command.
"""

from __future__ import annotations

import argparse
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import anyio
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Table

from hotplugd import (
    BlockReport,
    CommandContext,
    Config,
    DaemonSession,
    Outcome,
    PhaseInfo,
    State,
    format_bytes,
    hookimpl,
)

from .backend import SimulatedBackend

KERNEL_NAMES = {"anolis": "seed's (anolis)", "mainline": "mainline", "per-block": "per-block parallel"}


@dataclass
class Summary:
    """What a simulation did, gathered through the observer hooks."""

    outcomes: Counter[str] = field(default_factory=Counter)
    bytes_onlined: int = 0
    phases: Counter[str] = field(default_factory=Counter)
    workers: dict[int, int] = field(default_factory=dict)
    seconds: float = 0.0
    serial_seconds: float = 0.0  # the online calls' own durations, summed: a serial onliner's time
    kernel_onlined: int = 0  # blocks the simulated kernel onlined itself (auto-online)

    @hookimpl
    def hotplugd_phase_started(self, phase: PhaseInfo) -> None:
        self.phases[phase.trigger] += 1
        for node, n in phase.workers.items():
            self.workers[node] = max(self.workers.get(node, 0), n)

    @hookimpl
    def hotplugd_block_outcome(self, report: BlockReport) -> None:
        self.outcomes[report.result.outcome.value] += 1
        self.serial_seconds += report.seconds
        if report.result.outcome.success:
            self.bytes_onlined += report.block.size

    @property
    def onlined(self) -> int:
        return self.outcomes[Outcome.ONLINED] + self.outcomes[Outcome.ALREADY_ONLINE]


def render(summary: Summary, config: Config, console: Console) -> None:
    table = Table(title="hotplugd simulate", show_header=False)
    table.add_column(style="bold")
    table.add_column(justify="right")
    table.add_row("parallel_hotplug_ratio", f"{config.scheduler.parallel_hotplug_ratio:g}")
    table.add_row("blocks onlined", str(summary.onlined))
    if summary.kernel_onlined:
        table.add_row("blocks onlined by the kernel", str(summary.kernel_onlined))
    table.add_row("bytes onlined", format_bytes(summary.bytes_onlined))
    for outcome, n in sorted(summary.outcomes.items()):
        if outcome not in (Outcome.ONLINED, Outcome.ALREADY_ONLINE):
            table.add_row(f"blocks {outcome}", str(n))
    table.add_row("phases", ", ".join(f"{t}: {n}" for t, n in sorted(summary.phases.items())) or "0")
    table.add_row("workers per node (max)", ", ".join(f"node{n}: {w}" for n, w in sorted(summary.workers.items())))
    table.add_row("time", f"{summary.seconds:.3f} s")
    table.add_row("serial onlining would take", f"{summary.serial_seconds:.3f} s")
    console.print(table)


def render_kernels(predictions: Sequence[Any], console: Console) -> None:
    """Serial against parallel on each kernel, computed for the scenario, with the reason for each.

    ``predictions`` come in pairs per kernel: ratio 0 first, then the parallel ratio."""
    ratio = predictions[-1].ratio
    table = Table(title=f"this scenario on each kernel (computed): serial against ratio {ratio:g}")
    for column in ("kernel", "serial", "parallel", "speed-up", "why"):
        table.add_column(column, justify="left" if column in ("kernel", "why") else "right",
                         no_wrap=column != "why")
    for serial, parallel in zip(predictions[::2], predictions[1::2], strict=True):
        speedup = f"{serial.seconds / parallel.seconds:.1f}x" if parallel.seconds else "-"
        table.add_row(KERNEL_NAMES.get(serial.kernel, serial.kernel), f"{serial.seconds:.3f} s",
                      f"{parallel.seconds:.3f} s", speedup, parallel.reason)
    console.print(table)


def _online_count(backend: Any) -> int:
    census = backend.census() or ()
    return sum(1 for b in census if b.state is State.ONLINE)


#: Builds the daemon a scenario runs through (:meth:`hotplugd.CommandContext.daemon`).
SessionFactory = Callable[..., DaemonSession]


def arguments(parser: argparse.ArgumentParser) -> None:
    """``hotplugd simulate``'s own options (the core adds its config flags)."""
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument("--metrics", action="store_true", help="also serve metrics while it runs")
    parser.add_argument("--kernel", help="mainline (default), per-block or anolis (the seed's kernel, auto-online)")
    parser.add_argument("--from-host", nargs="?", const="/sys", metavar="SYSFS_ROOT",
                        help="predict a hot-add on this host's shape, read only from SYSFS_ROOT (default /sys)")
    parser.add_argument("--size", help="with --from-host: the hot-add's size (default: the host's memory)")


def _toml_string(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def command(ctx: CommandContext) -> int:
    """``hotplugd simulate``: the scenario through the daemon, or (``--from-host``) the what-if."""
    args = ctx.args
    first: list[str] = []
    if args.kernel:  # before the user's --set, which win
        seeds = ["plugins.simulated.auto_online=true"] if args.kernel == "anolis" else []
        first = [f"plugins.simulated.kernel={_toml_string(args.kernel)}", *seeds]
    config = ctx.load_config(backend="simulated", overrides=first)
    ctx.configure_logs(config, default_level="warning")
    if args.from_host is not None:
        from pathlib import Path

        from .whatif import whatif

        return whatif(Path(args.from_host), args.size)
    code, _ = simulate(config, ctx.daemon, progress=not args.no_progress, serve_metrics=args.metrics)
    return code


def simulate(config: Config, daemon: SessionFactory, *, progress: bool = True, serve_metrics: bool = False,
             console: Console | None = None) -> tuple[int, Summary]:
    """Play the configured scenario to the end; 0 when every added block ended online (or was removed)."""
    console = console or Console()
    summary = Summary()
    session = daemon(config, observers=[summary], serve_metrics=serve_metrics)
    backend = session.backend
    total = backend.expected_blocks if isinstance(backend, SimulatedBackend) else None
    online_before = _online_count(backend)

    async def main() -> None:
        start = time.monotonic()
        async with anyio.create_task_group() as tg:
            if progress:
                tg.start_soon(_progress, session, summary, total, console)
            await session.run_until_idle()
            tg.cancel_scope.cancel()
        summary.seconds = time.monotonic() - start

    anyio.run(main)
    summary.kernel_onlined = max(0, _online_count(backend) - online_before - summary.onlined)
    render(summary, config, console)
    if isinstance(backend, SimulatedBackend):
        render_kernels(backend.compare(config.scheduler.parallel_hotplug_ratio or 1.0), console)
    fine = (Outcome.ONLINED, Outcome.ALREADY_ONLINE, Outcome.GONE)
    bad = sum(n for o, n in summary.outcomes.items() if o not in fine)
    return (1 if bad else 0), summary


async def _progress(daemon: DaemonSession, summary: Summary, total: int | None, console: Console) -> None:
    columns = [TextColumn("onlining"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
               TextColumn("pending {task.fields[pending]}")]
    with Progress(*columns, console=console, transient=False) as bar:
        task = bar.add_task("online", total=total, pending=0)
        try:
            while True:
                bar.update(task, completed=summary.onlined, pending=daemon.pending)
                await anyio.sleep(0.05)
        finally:  # cancelled when the scenario ended: show where it ended, not the last tick
            bar.update(task, completed=summary.onlined, pending=daemon.pending)
