"""Plugins' subcommands on the command line: their parsers, and the context their ``run`` gets.

The contract (:mod:`hotplugd.plugin.commands`) is the plugin layer's; this module is its
implementation on the real daemon. A contribution whose ``arguments`` fail or clash with
the core's flags is left out, logged with its plugin's name; the others stay.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence

import structlog

from hotplugd.config import Config
from hotplugd.daemon import Daemon
from hotplugd.engine.plan import Plan, refuse_forced_kernel
from hotplugd.errors import ConfigError
from hotplugd.observe import logs
from hotplugd.plugin.backend import Backend
from hotplugd.plugin.commands import Command, CommandContext, CommandRegistry, DaemonSession, PlanSummary
from hotplugd.plugin.manager import PluginManager, make_manager

log = structlog.get_logger(__name__)

#: Loads the config from the parsed flags, as the core's commands do: (args, forced backend, overrides first).
ConfigLoader = Callable[[argparse.Namespace, "str | None", Sequence[str]], Config]


def add_contributed(sub: argparse._SubParsersAction, registry: CommandRegistry,
                    config_args: Callable[[argparse.ArgumentParser], None]) -> dict[str, Command]:
    """Add each contributed command's parser to ``sub``; the commands added, by name."""
    added: dict[str, Command] = {}
    failed: set[str] = set()
    for command in registry.commands():
        if command.plugin in failed:
            continue
        options = argparse.ArgumentParser(add_help=False)
        try:
            if command.config_flags:
                config_args(options)
            if command.arguments is not None:
                command.arguments(options)
        except Exception as exc:  # noqa: BLE001 - a plugin's bug (or a clash with the core's flags), by name
            failed.add(command.plugin)
            log.error("plugin_commands_failed", plugin=command.plugin, command=command.name,
                      error=f"{type(exc).__name__}: {exc}")
            continue
        added[command.name] = command
    for name in [n for n, c in added.items() if c.plugin in failed]:
        del added[name]  # a plugin's commands come whole or not at all
    for name, command in added.items():
        options = argparse.ArgumentParser(add_help=False)
        if command.config_flags:
            config_args(options)
        if command.arguments is not None:
            command.arguments(options)
        parser = sub.add_parser(name, parents=[options], help=command.help,
                                description=command.description or command.help,
                                epilog=f"exit status: {command.exit_status}" if command.exit_status else None)
        parser.set_defaults(contributed_command=command)
    return added


def _summary(plan: Plan) -> PlanSummary:
    found = plan.found
    written = {k: v for k, v in plan.changes().items() if found is not None and found.writable(k)}
    return PlanSummary(plan.executor, plan.reason, written)


class Session(DaemonSession):
    """A :class:`hotplugd.daemon.Daemon` driven to idle by a command."""

    def __init__(self, config: Config, pm: PluginManager, *, observers: Sequence[object] = (),
                 serve_metrics: bool = False) -> None:
        for number, observer in enumerate(observers):
            pm.register(observer, name=f"observer-{number}-{type(observer).__name__}")
        self._daemon = Daemon(config, pm, serve_metrics=serve_metrics)
        self._unplanned = self._daemon.plan  # replaced when the daemon applied its plan

    @property
    def backend(self) -> Backend:
        return self._daemon.backend

    @property
    def plan(self) -> PlanSummary | None:
        plan = self._daemon.plan
        return None if plan is self._unplanned else _summary(plan)

    @property
    def pending(self) -> int:
        return self._daemon.scheduler.pending

    @property
    def stuck(self) -> int:
        value = self._daemon.metrics.registry.get_sample_value("hotplugd_kernel_deferred_stuck_blocks")
        return int(value or 0)

    async def preflight(self) -> PlanSummary:
        config = self._daemon.config
        plan = await self._daemon.make_plan(config)
        refused = refuse_forced_kernel(config, plan)
        if refused is not None:
            raise ConfigError(f"scheduler.onliner = \"kernel\" cannot be honoured: {refused}",
                              hint="set scheduler.onliner = \"auto\" to let hotplugd online where the kernel cannot")
        return _summary(plan)

    async def run_until_idle(self) -> None:
        await self._daemon.run(until_idle=True)

    def stop(self) -> None:
        self._daemon.scheduler.stop()


class CliContext(CommandContext):
    """The context of a contributed command run from the command line."""

    def __init__(self, args: argparse.Namespace, load: ConfigLoader) -> None:
        self.args = args
        self._load = load

    def load_config(self, *, backend: str | None = None, overrides: Sequence[str] = ()) -> Config:
        return self._load(self.args, backend, overrides)

    def configure_logs(self, config: Config, *, default_level: str | None = None) -> None:
        explicit = getattr(self.args, "log_level", None)
        logs.configure(config.log_level if explicit or default_level is None else default_level, config.log_format)

    def daemon(self, config: Config, *, observers: Sequence[object] = (),
               serve_metrics: bool = False) -> DaemonSession:
        return Session(config, make_manager(config.disabled_plugins), observers=observers,
                       serve_metrics=serve_metrics)
