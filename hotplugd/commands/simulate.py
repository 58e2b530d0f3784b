"""``hotplugd simulate``: a scenario on the simulated backend, through the real daemon and scheduler."""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field

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

from hotplugd.config import Config
from hotplugd.daemon import Daemon
from hotplugd.model import BlockReport, Outcome, PhaseInfo
from hotplugd.plugin.manager import PluginManager
from hotplugd.plugin.spec import hookimpl
from hotplugd.units import format_bytes


@dataclass
class Summary:
    """What a simulation did, gathered through the observer hooks."""

    outcomes: Counter[str] = field(default_factory=Counter)
    bytes_onlined: int = 0
    phases: Counter[str] = field(default_factory=Counter)
    workers: dict[int, int] = field(default_factory=dict)
    seconds: float = 0.0
    serial_seconds: float = 0.0  # the online calls' own durations, summed: a serial onliner's time

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
    table.add_row("bytes onlined", format_bytes(summary.bytes_onlined))
    for outcome, n in sorted(summary.outcomes.items()):
        if outcome not in (Outcome.ONLINED, Outcome.ALREADY_ONLINE):
            table.add_row(f"blocks {outcome}", str(n))
    table.add_row("phases", ", ".join(f"{t}: {n}" for t, n in sorted(summary.phases.items())) or "0")
    table.add_row("workers per node (max)", ", ".join(f"node{n}: {w}" for n, w in sorted(summary.workers.items())))
    table.add_row("time", f"{summary.seconds:.3f} s")
    table.add_row("serial onlining would take", f"{summary.serial_seconds:.3f} s")
    console.print(table)


def simulate(config: Config, pm: PluginManager, *, progress: bool = True, serve_metrics: bool = False,
             console: Console | None = None) -> int:
    """Play the configured scenario to the end; 0 when every added block ended online (or was removed)."""
    console = console or Console()
    summary = Summary()
    pm.register(summary, name="hotplugd.commands.simulate")
    daemon = Daemon(config, pm, serve_metrics=serve_metrics)
    total = getattr(daemon.backend, "expected_blocks", None)

    async def main() -> None:
        start = time.monotonic()
        async with anyio.create_task_group() as tg:
            if progress:
                tg.start_soon(_progress, daemon, summary, total, console)
            await daemon.run(until_idle=True)
            tg.cancel_scope.cancel()
        summary.seconds = time.monotonic() - start

    anyio.run(main)
    render(summary, config, console)
    bad = sum(n for o, n in summary.outcomes.items() if o not in (Outcome.ONLINED, Outcome.ALREADY_ONLINE, Outcome.GONE))
    return 1 if bad else 0


async def _progress(daemon: Daemon, summary: Summary, total: int | None, console: Console) -> None:
    columns = [TextColumn("onlining"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
               TextColumn("pending {task.fields[pending]}")]
    with Progress(*columns, console=console, transient=False) as bar:
        task = bar.add_task("online", total=total, pending=0)
        try:
            while True:
                bar.update(task, completed=summary.onlined, pending=daemon.scheduler.pending)
                await anyio.sleep(0.05)
        finally:  # cancelled when the scenario ended: show where it ended, not the last tick
            bar.update(task, completed=summary.onlined, pending=daemon.scheduler.pending)
