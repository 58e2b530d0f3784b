"""What ``hotplugd simulate`` shows: who onlined, the proof, one measured time against one computed serial time.

The measured time is **hot-add to all online**: from the scenario's first block added to
the last block online on the simulated kernel (whoever onlined it); hotplugd's proof of
the last block (read back, or its own write) follows, and its lag is shown. The serial time is the
same hot-add onlined **one block at a time, the normal way** (mainline's path), computed
from the same per-block costs the simulated kernel sleeps. The kernels' table is
computed too, with the same definition of serial on every row.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

from rich.console import Console
from rich.table import Table

from hotplugd import BlockReport, Executor, Outcome, PhaseInfo, PlanSummary, format_bytes, hookimpl

from .predict import Prediction
from .settings import DEFAULT_SCENARIO, Settings

KERNEL_NAMES = {"anolis": "the seed's (anolis)", "mainline": "mainline", "per-block": "per-block parallel"}
KERNEL_ORDER = ("mainline", "per-block", "anolis")
#: Why hotplugd's phases started (``Trigger``), in words.
TRIGGERS = {"ratio_0": "ratio 0: no deferral", "serial": "no deferral: the kernel onlines one block at a time",
            "queue_full": "the queue's bound", "offline_bytes": "the offline bytes' bound",
            "memmap_share": "the memmap share's bound", "max_defer": "max_defer", "settle": "the hot-add settled",
            "kernel_left_offline": "blocks the kernel left offline", "kernel_grace_max": "the kernel's grace's bound",
            "kernel_off_at_start": "blocks found offline at start, the kernel's onlining off"}


def plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


@dataclass
class Summary:
    """What a simulation did, gathered through the observer hooks (the proof of every block)."""

    outcomes: Counter[str] = field(default_factory=Counter)
    bytes_onlined: int = 0
    phases: Counter[str] = field(default_factory=Counter)
    workers: dict[int, int] = field(default_factory=dict)
    by_kernel: int = 0  # blocks the kernel onlined and hotplugd read back, zone-checked and counted
    by_hotplugd: int = 0  # blocks hotplugd's own write onlined
    first_add: float | None = None  # monotonic time of the first proven block's add event
    last_proof: float | None = None  # monotonic time of the last proof
    stuck: int = 0  # blocks still half-online past scheduler.kernel_phase_timeout when the run ended

    @hookimpl
    def hotplugd_phase_started(self, phase: PhaseInfo) -> None:
        self.phases[phase.trigger] += 1
        for node, n in phase.workers.items():
            self.workers[node] = max(self.workers.get(node, 0), n)

    @hookimpl
    def hotplugd_block_outcome(self, report: BlockReport) -> None:
        now = time.monotonic()
        self.outcomes[report.result.outcome.value] += 1
        if not report.result.outcome.success:
            return
        self.bytes_onlined += report.block.size
        if report.attempts == 0:  # a read-back: the kernel onlined it (hotplugd wrote nothing)
            self.by_kernel += 1
        else:
            self.by_hotplugd += 1
        added = now - report.waited
        self.first_add = added if self.first_add is None else min(self.first_add, added)
        self.last_proof = now

    @property
    def onlined(self) -> int:
        """Blocks proven online: read back after the kernel, or onlined by hotplugd."""
        return self.outcomes[Outcome.ONLINED] + self.outcomes[Outcome.ALREADY_ONLINE]

    @property
    def seconds(self) -> float:
        """Hot-add to all proven: the first add event to the last block proven online."""
        if self.first_add is None or self.last_proof is None:
            return 0.0
        return self.last_proof - self.first_add


def describe_scenario(settings: Settings) -> str:
    steps = []
    for step in settings.scenario:
        if step.kind == "remove":
            steps.append(f"{plural(step.count, 'block')} removed")
        else:
            kind = "DIMM" if step.kind == "dimm" else step.kind
            steps.append(f"{format_bytes(step.size)} {kind} on node {step.node}")
    text = ", then ".join(steps) or "no hot-add (coldplug only)"
    return text + (" (the default)" if settings.scenario == DEFAULT_SCENARIO else "")


@dataclass(frozen=True)
class Timing:
    """The host's own view of a run: first block added, last block online (monotonic; None: never), and
    how many blocks the kernel held half-online on the way."""

    first_plug: float | None
    last_online: float | None
    prepared: int = 0

    def online_seconds(self, summary: Summary) -> float:
        """Hot-add to all online (coldplug only: from the first proof's add event)."""
        start = self.first_plug if self.first_plug is not None else summary.first_add
        if start is None or self.last_online is None:
            return 0.0
        return max(0.0, self.last_online - start)

    def proof_lag(self, summary: Summary) -> float:
        if summary.last_proof is None or self.last_online is None:
            return 0.0
        return max(0.0, summary.last_proof - self.last_online)


def render(summary: Summary, settings: Settings, plan: PlanSummary | None, ratio: float, serial: Prediction,
           expected: int, timing: Timing, console: Console) -> None:
    """The first screen: the kernel and scenario, the plan, who onlined, the proof, the two times."""
    kernel = KERNEL_NAMES.get(settings.kernel, settings.kernel)
    console.print(f"[bold]hotplugd simulate[/]: {kernel} kernel, {settings.nodes} nodes x "
                  f"{plural(settings.cpus_per_node, 'CPU')}, {format_bytes(settings.block_size)} blocks; "
                  f"hot-add: {describe_scenario(settings)}")
    table = Table(show_header=False, box=None, pad_edge=False)
    table.add_column(style="bold", no_wrap=True)
    table.add_column()
    if plan is not None:
        who = "the kernel onlines" if plan.onliner is Executor.KERNEL else "hotplugd onlines"
        written = ", ".join(f"{k}={v}" for k, v in plan.written.items()) or "none written"
        table.add_row("plan", f"{who}: {plan.reason}")
        table.add_row("knobs set", written)
    proven = f"{plural(summary.onlined, 'block')} of {expected} ({format_bytes(summary.bytes_onlined)})"
    who_did = []
    if summary.by_kernel:
        who_did.append(f"{summary.by_kernel} by the kernel, each read back, zone-checked, timed and counted")
    if summary.by_hotplugd:
        who_did.append(f"{summary.by_hotplugd} by hotplugd's own writes")
    table.add_row("online, proven", proven + (": " + "; ".join(who_did) if who_did else ""))
    if timing.prepared:
        end = (f"{summary.stuck} never finished" if summary.stuck else "until the kernel's deferred phase ended")
        table.add_row("half-online", f"{plural(timing.prepared, 'block')} came half-online first (the online uevent at "
                                     f"PREPARE, pages not yet usable); hotplugd read each back, {end}")
    for outcome, n in sorted(summary.outcomes.items()):
        if outcome not in (Outcome.ONLINED, Outcome.ALREADY_ONLINE):
            table.add_row(f"blocks {outcome}", str(n))
    if summary.phases:
        phases = ", ".join(f"{plural(n, 'phase')} ({TRIGGERS.get(t, t)})" for t, n in sorted(summary.phases.items()))
        workers = ", ".join(f"node{n}: {w}" for n, w in sorted(summary.workers.items()))
        table.add_row("hotplugd's phases", f"{phases}; workers per node at most {workers}")
    if summary.onlined:
        table.add_row("time", f"{timing.online_seconds(summary):.3f} s from the first block added to the last one "
                              f"online (measured, parallel_hotplug_ratio {ratio:g}); hotplugd proved the last one "
                              f"{timing.proof_lag(summary) * 1000:.0f} ms later")
    else:
        table.add_row("time", "no block came online")
    table.add_row("serial", f"{serial.seconds:.3f} s to online the same blocks one at a time, the normal way "
                            "(computed from the same costs)")
    console.print(table)


def render_kernels(predictions: Sequence[Prediction], ratio: float, console: Console) -> None:
    """This scenario on each kernel, computed: serial (ratio 0) against ``ratio``, and why."""
    if ratio == 0:
        title = "each kernel at ratio 0 (computed): one block at a time"
    else:
        title = f"this scenario on each kernel (computed): serial (ratio 0) against ratio {ratio:g}"
    table = Table(title=title)
    columns = ("kernel", "serial") if ratio == 0 else ("kernel", "serial", f"ratio {ratio:g}", "speed-up", "why")
    for column in columns:
        table.add_column(column, justify="left" if column in ("kernel", "why") else "right",
                         no_wrap=column != "why")
    by = {(p.kernel, p.ratio): p for p in predictions}
    for kernel in KERNEL_ORDER:
        serial = by[kernel, 0.0]
        if ratio == 0:
            table.add_row(KERNEL_NAMES[kernel], f"{serial.seconds:.3f} s")
            continue
        parallel = by[kernel, ratio]
        speedup = f"{serial.seconds / parallel.seconds:.1f}x" if parallel.seconds else "-"
        table.add_row(KERNEL_NAMES[kernel], f"{serial.seconds:.3f} s", f"{parallel.seconds:.3f} s", speedup,
                      parallel.reason)
    console.print(table)
