"""``hotplugd simulate``: a scenario on the simulated backend, through the real daemon and scheduler.

The simulated plugin contributes the command (``hotplugd_add_commands``); it drives the
daemon through the public :class:`hotplugd.CommandContext`, like any plugin's command.
The plan is made and applied as on a real host (the simulated kernel has the real
knobs), so on mainline the kernel onlines and hotplugd proves every block, and on the
seed's kernel hotplugd sets its ratio and watches the half-online blocks to the end.
A scenario always ends: blocks the kernel holds half-online past
``scheduler.kernel_phase_timeout`` end the run with one error.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path

import anyio
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from hotplugd import CommandContext, Config, ConfigError, DaemonSession, HotplugdError, Outcome, State

from .backend import SimulatedBackend
from .kernels import KERNELS
from .predict import predict
from .screen import Summary, Timing, plural, render, render_kernels

#: Builds the daemon a scenario runs through (:meth:`hotplugd.CommandContext.daemon`).
SessionFactory = Callable[..., DaemonSession]
#: How often the progress bar and the stuck check look.
TICK = 0.05


def arguments(parser: argparse.ArgumentParser) -> None:
    """``hotplugd simulate``'s own options (the core adds its config flags)."""
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument("--metrics", action="store_true", help="also serve metrics while it runs")
    parser.add_argument("--kernel", help="mainline (default), per-block or anolis (the seed's kernel)")
    parser.add_argument("--from-host", nargs="?", const="/sys", metavar="SYSFS_ROOT",
                        help="predict a hot-add on this host's shape, read only from SYSFS_ROOT (default /sys)")
    parser.add_argument("--size", help="with --from-host: the hot-add's size (default: the host's memory)")


def _toml_string(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def check_flags(args: argparse.Namespace) -> None:
    """Refuse, naming the flag (exit 78), what simulate cannot honour, before any work."""
    if args.kernel is not None and args.kernel not in KERNELS:
        raise ConfigError(f"--kernel: expected one of {', '.join(KERNELS)}, got {args.kernel!r}")
    backend = getattr(args, "backend", None)
    if backend is not None and backend != "simulated":
        raise ConfigError(f"--backend {backend}: simulate plays its scenario on the simulated backend only",
                          hint=f"drop --backend; `hotplugd check --backend {backend}` describes that host")
    if args.from_host is not None:  # the what-if computes every kernel and ratio, and plays nothing
        ignored = [flag for flag, given in (("--kernel", args.kernel is not None), ("--metrics", args.metrics),
                                            ("--ratio", getattr(args, "ratio", None) is not None)) if given]
        if ignored:
            raise ConfigError(f"{ignored[0]}: not with --from-host, whose what-if computes every kernel at ratios "
                              "0, 0.25, 0.5 and 1 and plays no scenario", hint=f"drop {', '.join(ignored)}")
    if args.size is not None and args.from_host is None:
        raise ConfigError("--size: only with --from-host (the simulated scenario's sizes are "
                          "plugins.simulated.scenario)", hint="add --from-host, or set the scenario with --set")


def command(ctx: CommandContext) -> int:
    """``hotplugd simulate``: the scenario through the daemon, or (``--from-host``) the what-if."""
    args = ctx.args
    check_flags(args)
    first = [f"plugins.simulated.kernel={_toml_string(args.kernel)}"] if args.kernel else []
    config = ctx.load_config(backend="simulated", overrides=first)  # the user's --set win
    ctx.configure_logs(config, default_level="warning")
    if args.from_host is not None:
        from .whatif import whatif

        return whatif(Path(args.from_host), args.size)
    code, _ = simulate(config, ctx.daemon, progress=not args.no_progress, serve_metrics=args.metrics)
    return code


def _user_error(group: BaseExceptionGroup) -> HotplugdError | None:
    user, rest = group.split(HotplugdError)
    if user is None or rest is not None:
        return None
    first: BaseException = user
    while isinstance(first, BaseExceptionGroup):
        first = first.exceptions[0]
    return first if isinstance(first, HotplugdError) else None


def simulate(config: Config, daemon: SessionFactory, *, progress: bool = True, serve_metrics: bool = False,
             console: Console | None = None) -> tuple[int, Summary]:
    """Play the configured scenario to the end; 0 when every added block ended online (or was removed)."""
    console = console or Console()
    summary = Summary()
    session = daemon(config, observers=[summary], serve_metrics=serve_metrics)
    backend = session.backend
    if not isinstance(backend, SimulatedBackend):
        raise ConfigError(f"simulate needs the simulated backend, not {config.backend!r}")
    anyio.run(session.preflight)  # a plan run would refuse is refused here, before the scenario starts
    total = backend.expected_blocks

    async def main() -> None:
        async with anyio.create_task_group() as tg:
            tg.start_soon(_watch, session, summary, total, console, progress)
            await session.run_until_idle()
            tg.cancel_scope.cancel()

    try:
        anyio.run(main)
    except BaseExceptionGroup as group:
        error = _user_error(group)
        if error is None:
            raise
        raise error from None
    if summary.stuck or session.stuck:  # whoever ended the run: every block the kernel still holds half-online
        summary.stuck = sum(1 for b in backend.census() if b.state is State.KERNEL_DEFERRED)
    settings = backend.settings
    ratio = config.scheduler.parallel_hotplug_ratio
    serial = predict(settings, settings.scenario, "mainline", 0.0)
    timing = Timing(backend.host.first_plug_at, backend.host.last_online_at, backend.host.prepared)
    render(summary, settings, session.plan, ratio, serial, total, timing, console)
    render_kernels(backend.compare(ratio), ratio, console)
    fine = (Outcome.ONLINED, Outcome.ALREADY_ONLINE, Outcome.GONE)
    bad = sum(n for o, n in summary.outcomes.items() if o not in fine)
    if summary.stuck:
        timeout = config.scheduler.kernel_phase_timeout
        knobs = backend.host.knobs.values
        console.print(f"[red]hotplugd: error:[/] {plural(summary.stuck, 'block')} left half-online: the kernel "
                      f"held them past scheduler.kernel_phase_timeout ({timeout:g} s) and its deferred final phase "
                      "never ran "
                      f"(auto_online_blocks = {knobs['auto_online_blocks']}, parallel_hotplug_ratio = "
                      f"{knobs.get('parallel_hotplug_ratio', '-')}); the run ended there", highlight=False)
    return (1 if bad or summary.stuck else 0), summary


async def _watch(session: DaemonSession, summary: Summary, total: int, console: Console, progress: bool) -> None:
    """The progress bar (blocks proven), and the end of a run whose blocks only the kernel can finish."""
    bar = None
    if progress:
        columns = [TextColumn("proven online"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                   TextColumn("queued for hotplugd {task.fields[pending]}")]
        bar = Progress(*columns, console=console, transient=False)
        bar.start()
        task = bar.add_task("online", total=total, pending=0)
    try:
        while True:
            if bar is not None:
                bar.update(task, completed=summary.onlined, pending=session.pending)
            stuck = session.stuck
            if stuck and not session.pending:  # only the kernel could finish them, and its phase is not coming
                summary.stuck = stuck
                session.stop()
                return
            await anyio.sleep(TICK)
    finally:  # cancelled when the scenario ended: show where it ended, not the last tick
        if bar is not None:
            bar.update(task, completed=summary.onlined, pending=session.pending)
            bar.stop()
