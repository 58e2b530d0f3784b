"""The daemon: one anyio task group owning the intake, the scheduler, signals and the watchdog.

Start-up order matters: the backend binds its event source first, the intake
starts reading, the plan is applied, the coldplug scan queues every offline block,
and only then does the daemon report ready. Where the plan has the kernel online
but its auto-online read ``offline`` until then (every boot, with the kernel's
default), the blocks that scan found offline were added before and no kernel
onlines them: they are onlined at once, and READY waits for them (at most
:data:`START_ONLINE_BOUND`), so that a unit ordered before ``sysinit.target``
has memory present at boot online before the rest of the boot starts.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import anyio
import structlog
from anyio import CancelScope
from anyio.abc import TaskStatus

from hotplugd import __version__
from hotplugd.config import Config, load
from hotplugd.engine.context import EngineContext
from hotplugd.engine.knobrecord import record_found
from hotplugd.engine.plan import Plan, make_plan, refuse_forced_kernel
from hotplugd.engine.scheduler import Scheduler
from hotplugd.errors import BackendError, ConfigError, HotplugdError
from hotplugd.faults import FaultInjection
from hotplugd.model import HOST_DOMAIN, Executor, RescanReason
from hotplugd.observe import logs
from hotplugd.observe.metrics import Metrics
from hotplugd.observe.notify import Notifier
from hotplugd.observe.server import MetricsServer, serve, write_textfile
from hotplugd.plugin.hooks import Hooks
from hotplugd.plugin.manager import PluginManager, build_backend
from hotplugd.plugin.validation import check_plugin_config

log = structlog.get_logger(__name__)

#: How often, at most, STATUS= and the textfile are refreshed (only when the engine changed).
STATUS_INTERVAL = 1.0
#: The most the backend's ``stop()`` may take at shutdown: well within the unit's TimeoutStopSec (30 s),
#: so the final textfile and the ``stopped`` line are still written when a backend hangs.
STOP_TIMEOUT = 10.0
#: The most READY waits for the blocks found offline at start that no kernel onlines: well within the unit's
#: TimeoutStartSec (180 s) after the daemon's own start-up. Past it READY is sent and they go on onlining.
START_ONLINE_BOUND = 30.0


def since_boot() -> float:
    """Seconds since this machine booted (CLOCK_BOOTTIME, as /proc/uptime): where the log puts the plan in the boot."""
    return time.clock_gettime(time.CLOCK_BOOTTIME)


def user_error(group: BaseExceptionGroup) -> HotplugdError | None:
    """The user error a task group failed with, when that is all it failed with; else None."""
    user, rest = group.split(HotplugdError)
    if user is None or rest is not None:
        return None
    first: BaseException = user
    while isinstance(first, BaseExceptionGroup):
        first = first.exceptions[0]
    return first if isinstance(first, HotplugdError) else None


class Daemon:
    """Everything one running hotplugd owns. Tests build one with fresh parts and drive ``run()``."""

    def __init__(
        self,
        config: Config,
        pm: PluginManager,
        *,
        metrics: Metrics | None = None,
        notifier: Notifier | None = None,
        overrides: list[str] | tuple[str, ...] = (),
        clock: Callable[[], float] = time.monotonic,
        serve_metrics: bool = True,
        ready_file: Path | None = None,
        faults: FaultInjection | None = None,
        boot_clock: Callable[[], float] = since_boot,
    ) -> None:
        check_plugin_config(pm, config)
        self.config = config
        self.pm = pm
        self.overrides = list(overrides)
        self.metrics = metrics or Metrics(max_domains=config.metrics.max_domains)
        self.notifier = notifier or Notifier()
        self.backend = build_backend(pm, config)
        self.hooks = Hooks(pm)
        self.hooks.configure(config)
        self.scheduler = Scheduler(EngineContext(config, self.hooks, self.backend, self.metrics, clock))
        self.serve_metrics = serve_metrics
        self.ready_file = ready_file
        self.metrics_server: MetricsServer | None = None
        self.conflicts: list[str] = []
        #: Who onlines the host's blocks (set at start and on every reload).
        self.plan = Plan(Executor.HOTPLUGD, "not planned yet")
        self.faults = faults or FaultInjection.from_environ()
        self.boot_clock = boot_clock
        self._signals = 0
        self._status_sent = ""

    def __repr__(self) -> str:
        return f"<Daemon backend={self.config.backend} {self.scheduler!r}>"

    async def run(self, *, until_idle: bool = False, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Run until SIGTERM/SIGINT (or, with ``until_idle``, until the event source ended and all is onlined)."""
        log.info("starting", version=__version__, backend=self.config.backend)  # `stopped` always has its start
        m = self.metrics
        m.build_info.info({"version": __version__, "backend": self.config.backend})
        m.backend_concurrency.set(self.backend.concurrency)
        for name in self.pm.failures:
            m.plugin_failures.labels(name).set(1)
        m.add_census(self.backend.census)
        m.add_dropped(self.backend.dropped_counts)
        for collector in self.backend.collectors():
            m.registry.register(collector)
        m.watch_queue(self.scheduler)
        self.hooks.register_collectors(m.registry)
        ready = False
        try:
            await self.backend.start()  # inside: a failed start is stopped too, as the contract promises
            async with anyio.create_task_group() as tg:
                # Handlers first: a SIGTERM or SIGHUP before READY is handled, never fatal.
                await tg.start(self._signals_task)
                tg.start_soon(self._intake)
                self.plan = await self._apply_plan(self.config)
                await self._report_conflicts()
                await self.scheduler.rescan(RescanReason.START, kernel_off=self._kernel_off_until_now())
                if self.serve_metrics:
                    self.metrics_server = serve(m.registry, self.config.metrics)
                tg.start_soon(self._schedule, tg.cancel_scope)
                await self._online_found_at_start()
                self._announce_ready()
                ready = True
                task_status.started()
                if self.notifier.watchdog_interval:  # half the timeout; pinged twice as often, for a loaded host
                    tg.start_soon(self._watchdog, self.notifier.watchdog_interval / 2)
                if self.notifier.enabled:
                    tg.start_soon(self._on_change, self._status)
                if self.config.metrics.textfile:
                    tg.start_soon(self._on_change, self._textfile)
                if until_idle:
                    self.scheduler.finish_when_idle()
        except BaseExceptionGroup as group:
            error = user_error(group)
            if error is None:
                raise
            raise error from None  # the CLI prints it and exits with its code (78 for config errors)
        finally:
            self.notifier.stopping()
            with anyio.move_on_after(STOP_TIMEOUT, shield=True) as bounded:
                await self.backend.stop()
            if bounded.cancelled_caught:
                log.error("backend_stop_timeout", seconds=STOP_TIMEOUT, backend=self.backend.describe(),
                          detail="the backend's stop() did not return: its resources may be left behind")
            self._write_textfile()
            if self.metrics_server is not None:
                self.metrics_server.close()
            if self.ready_file is not None and ready:
                self.ready_file.unlink(missing_ok=True)
            log.info("stopped", status=self.scheduler.status())

    async def _schedule(self, scope: CancelScope) -> None:
        """The scheduler, from the start-up scan on (its phases may come before READY); its end ends the daemon."""
        await self.scheduler.run()
        scope.cancel()

    def _kernel_off_until_now(self) -> tuple[str, ...]:
        """The host, when the plan has its kernel online but its auto-online read ``offline`` before the plan
        (every boot, with the kernel's default): blocks offline now were added before, and no kernel onlines them."""
        found = self.plan.found
        off = self.plan.executor is Executor.KERNEL and found is not None and \
            found.get("auto_online_blocks") == "offline"
        return (HOST_DOMAIN,) if off else ()

    async def _online_found_at_start(self) -> None:
        """Wait (at most :data:`START_ONLINE_BOUND`) until the blocks found offline at start that no kernel
        onlines are through their phase, and log when that was relative to boot."""
        scheduler = self.scheduler
        blocks = scheduler.left_from_start
        if not blocks:
            return
        t0 = anyio.current_time()
        log.info("start_online", blocks=blocks, since_boot=round(self.boot_clock(), 3),
                 detail="found offline at start with the kernel's auto-online off: onlined before READY")
        with anyio.move_on_after(START_ONLINE_BOUND):
            while scheduler.left_from_start and not scheduler.stopping:
                await scheduler.changes.wait_past(scheduler.changes.version)
        left = scheduler.left_from_start
        (log.warning if left else log.info)(
            "start_onlined", blocks=blocks, left=left, seconds=round(anyio.current_time() - t0, 3),
            since_boot=round(self.boot_clock(), 3), status=scheduler.status(),
            **({"detail": f"still offline after {START_ONLINE_BOUND:g} s: READY now, they go on onlining"}
               if left and not scheduler.stopping else {}))

    async def _intake(self) -> None:
        async for event in self.backend.events():
            self.scheduler.handle(event)
        self.scheduler.source_done = True
        self.scheduler.wake()

    async def make_plan(self, config: Config) -> Plan:
        """The host's plan for ``config`` on the kernel as it is now (reads only)."""
        knobs = await self.backend.kernel_knobs(HOST_DOMAIN)
        return make_plan(config, knobs, concurrency=self.backend.domain_concurrency(HOST_DOMAIN),
                         zone_choosers=self.hooks.zone_choosers(config),
                         sources=await self.backend.memory_sources(HOST_DOMAIN))

    async def _apply_plan(self, config: Config) -> Plan:
        """Set the kernel's knobs for ``config``'s plan, after recording what they read before hotplugd's
        first change. A config that forces the kernel where it cannot carry the policy is refused (78)."""
        plan = await self.make_plan(config)
        refused = refuse_forced_kernel(config, plan)
        if refused is not None:
            raise ConfigError(f"scheduler.onliner = \"kernel\" cannot be honoured: {refused}",
                              hint="set scheduler.onliner = \"auto\" to let hotplugd online where the kernel cannot")
        found = plan.found
        changes = {k: v for k, v in plan.changes().items() if found is not None and found.writable(k)}
        if changes and found is not None:
            try:
                await anyio.to_thread.run_sync(record_found, config.state_directory, HOST_DOMAIN, found, list(changes))
            except BackendError as exc:  # onlining matters more than a restore on uninstall: go on, loudly
                log.warning("knobs_not_recorded", error=exc.args[0], hint=exc.hint,
                            consequence="an uninstall cannot restore the kernel's knobs as found")
            await self.backend.set_kernel_knobs(changes, HOST_DOMAIN)
        self.metrics.plan(HOST_DOMAIN, plan.executor.value)
        log.info("plan", domain=HOST_DOMAIN, onliner=plan.executor.value, reason=plan.reason, written=changes,
                 since_boot=round(self.boot_clock(), 3))
        return plan

    async def _report_conflicts(self) -> None:
        self.conflicts = [*await self.backend.conflicts(), *self.plan.conflicts()]
        self.metrics.conflicts.set(len(self.conflicts))
        for message in self.conflicts:
            log.warning("conflict", detail=message)

    def _announce_ready(self) -> None:
        address = self.metrics_server.address if self.metrics_server else None
        log.info("ready", backend=self.backend.describe(), metrics=address, status=self.scheduler.status(),
                 since_boot=round(self.boot_clock(), 3))
        self._status_sent = self.status_line()
        self.notifier.ready(self._status_sent)
        if self.ready_file is not None:
            self.ready_file.write_text(f"{os.getpid()}\n")

    def status_line(self) -> str:
        """systemd's STATUS=: the scheduler's counts and the settings a reload may change."""
        cfg = self.config
        return (f"{self.scheduler.status()}; ratio {cfg.scheduler.parallel_hotplug_ratio:g}, "
                f"zones {cfg.zones.policy}, log {cfg.log_level}")

    async def _watchdog(self, interval: float) -> None:
        """WATCHDOG=1 from the event loop itself (a stuck loop stops it) every ``interval``: a quarter of
        ``WatchdogSec=`` (5 s with the shipped unit's 20 s), so a loop held up to three quarters of it by a
        loaded machine still pings in time. The only timer of an idle daemon."""
        while True:
            self.notifier.watchdog()
            await anyio.sleep(interval)

    async def _on_change(self, refresh: Callable[[], Awaitable[None]]) -> None:
        """``refresh()`` now, then after each change of the engine, at most once a ``STATUS_INTERVAL``.

        An idle daemon changes nothing: this sleeps until an event comes (no timer).
        """
        changes = self.scheduler.changes
        while True:
            version = changes.version
            await refresh()
            await anyio.sleep(STATUS_INTERVAL)
            await changes.wait_past(version)

    async def _status(self) -> None:
        """STATUS= when the scheduler's counts changed."""
        line = self.status_line()
        if line != self._status_sent:
            self._status_sent = line
            self.notifier.status(line)

    async def _textfile(self) -> None:
        """Refresh the textfile in a worker thread; a slow filesystem never delays the watchdog."""
        await anyio.to_thread.run_sync(self._write_textfile)

    def _write_textfile(self) -> None:
        try:
            write_textfile(self.metrics.registry, self.config.metrics.textfile)
        except OSError as exc:
            log.warning("textfile_failed", path=self.config.metrics.textfile, error=str(exc))

    async def _signals_task(self, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        wanted = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGUSR1, signal.SIGUSR2)
        with anyio.open_signal_receiver(*wanted) as signals:
            task_status.started()
            async for signum in signals:
                if signum == signal.SIGHUP:
                    await self.reload()
                    continue
                if signum == signal.SIGUSR2:  # test-only (hotplugd.faults): stall the event loop
                    if self.faults.enabled:
                        log.warning("test_stall", seconds=self.faults.stall_seconds)
                        self.faults.stall_loop()
                    else:
                        log.warning("signal_ignored", signal="SIGUSR2", hint="test hooks are off")
                    continue
                if signum == signal.SIGUSR1:  # an operator asks for a full rescan
                    log.info("rescan_requested", signal="SIGUSR1")
                    self.scheduler.request_rescan(RescanReason.REQUEST)
                    continue
                self._signals += 1
                if self._signals > 1:
                    log.warning("exiting_now", signal=signal.Signals(signum).name)
                    os._exit(128 + signum)
                log.info("stopping", signal=signal.Signals(signum).name, status=self.scheduler.status())
                self.notifier.stopping()
                self.scheduler.stop()

    def _read_config(self) -> Config:
        """The config file re-read with the command line's overrides (blocking: run in a thread)."""
        new = load(self.config.source, self.overrides)
        check_plugin_config(self.pm, new)
        if new.backend != self.config.backend:
            raise HotplugdError(f"backend cannot change on reload ({self.config.backend} → {new.backend})",
                                hint="restart the service to switch backends")
        return new

    async def reload(self) -> bool:
        """Re-read the config file; apply scheduler, zone and log settings. Keep the old one if invalid.

        Queued blocks stay queued: the scheduler reads its settings from the same Config object.
        """
        self.notifier.reloading()
        try:
            new = await anyio.to_thread.run_sync(self._read_config)
        except (HotplugdError, OSError) as exc:
            self.metrics.reloads.labels("refused").inc()
            log.error("reload_refused", error=str(exc), source=str(self.config.source))
            self.notifier.ready(f"reload refused; {self.status_line()}")
            return False
        if new.plugins.get(new.backend) != self.config.plugins.get(new.backend):
            log.warning("backend_settings_not_reloaded", backend=new.backend,
                        hint=f"restart the service to apply [plugins.{new.backend}]")
        try:
            self.plan = await self._apply_plan(new)
        except HotplugdError as exc:
            self.metrics.reloads.labels("refused").inc()
            log.error("reload_refused", error=str(exc), source=str(self.config.source))
            self.notifier.ready(f"reload refused; {self.status_line()}")
            return False
        for section in ("scheduler", "zones", "log_level", "log_format", "plugins"):
            setattr(self.config, section, getattr(new, section))
        self.hooks.configure(self.config, isolated=True)
        self.scheduler.reconfigured()
        logs.configure(new.log_level, new.log_format)
        self.metrics.reloads.labels("applied").inc()
        log.info("reloaded", source=str(new.source), ratio=new.scheduler.parallel_hotplug_ratio,
                 zone_policy=new.zones.policy)
        self.notifier.ready(f"reloaded; {self.status_line()}")
        self.scheduler.wake()
        return True
