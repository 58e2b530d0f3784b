"""Subcommands a plugin adds to the ``hotplugd`` command line (the ``hotplugd_add_commands`` hook).

A plugin's implementation of ``hotplugd_add_commands`` receives a :class:`CommandRegistry`
and calls :meth:`CommandRegistry.add` once per subcommand, as tox's ``tox_add_option`` lets
a plugin extend tox's parser::

    from hotplugd import CommandContext, CommandRegistry, hookimpl

    def arguments(parser):
        parser.add_argument("--count", type=int, default=1)

    def hello(ctx: CommandContext) -> int:
        config = ctx.load_config()
        print(f"hello from {config.backend}, {ctx.args.count} times")
        return 0

    @hookimpl
    def hotplugd_add_commands(commands: CommandRegistry) -> None:
        commands.add("hello", hello, help="say hello", arguments=arguments)

The core builds its parser from its own commands and every plugin's contributions. A
contribution that fails (the hook raises, a name is taken, ``arguments`` raises or
clashes with the core's config flags) leaves that plugin's commands out and is logged
with the plugin's name; the other plugins' commands stay.

When the command runs, ``run(ctx)`` receives a :class:`CommandContext`: the parsed
arguments, the config as every core command loads it (``--config``, ``--set``,
``--backend``, ``--ratio``, ``--log-level``), and a daemon it may drive to idle
(:meth:`CommandContext.daemon`). It returns the exit code; a
:class:`hotplugd.HotplugdError` it raises is printed without a traceback and exits with
its code (78 for a :class:`hotplugd.ConfigError`).
"""

from __future__ import annotations

import abc
import argparse
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from hotplugd.config import Config
from hotplugd.errors import PluginError
from hotplugd.model import Executor
from hotplugd.plugin.backend import Backend

#: A command's name: what the user types after ``hotplugd``.
NAME = re.compile(r"[a-z][a-z0-9-]{0,31}")


@dataclass(frozen=True)
class PlanSummary:
    """Who onlines the host's blocks, why, and the kernel knobs hotplugd wrote for it."""

    onliner: Executor
    reason: str
    written: Mapping[str, str] = field(default_factory=dict)


class DaemonSession(abc.ABC):
    """A daemon a command drives: built from a config, run until its event source ended and all is done."""

    @property
    @abc.abstractmethod
    def backend(self) -> Backend:
        """The backend the config chose, already built (not started before :meth:`run_until_idle`)."""

    @property
    @abc.abstractmethod
    def plan(self) -> PlanSummary | None:
        """The plan applied at start (None before it was made)."""

    @property
    @abc.abstractmethod
    def pending(self) -> int:
        """Blocks queued for hotplugd's own onlining right now."""

    @property
    @abc.abstractmethod
    def stuck(self) -> int:
        """Blocks the kernel has held half-online past ``scheduler.kernel_phase_timeout``."""

    @abc.abstractmethod
    async def preflight(self) -> PlanSummary:
        """The plan ``run`` would apply, read only; a :class:`hotplugd.ConfigError` where ``run`` would
        refuse to start (``scheduler.onliner = "kernel"`` the kernel cannot carry)."""

    @abc.abstractmethod
    async def run_until_idle(self) -> None:
        """Start, apply the plan, and run until the event source ended and nothing is left to do."""

    @abc.abstractmethod
    def stop(self) -> None:
        """Take no new work and end :meth:`run_until_idle` once the calls in flight finished."""


class CommandContext(abc.ABC):
    """What a contributed command's ``run`` receives."""

    #: The parsed command line: the core's config flags and the command's own ``arguments``.
    args: argparse.Namespace

    @abc.abstractmethod
    def load_config(self, *, backend: str | None = None, overrides: Sequence[str] = ()) -> Config:
        """The config as every core command loads it (``--config``, ``--set`` and the other flags).

        ``backend`` forces the backend; ``overrides`` (``key=value``, TOML values) apply before
        the user's ``--set``, which win. Invalid: :class:`hotplugd.ConfigError` (exit 78).
        """

    @abc.abstractmethod
    def configure_logs(self, config: Config, *, default_level: str | None = None) -> None:
        """Logs as the config says; ``default_level`` instead when ``--log-level`` was not given."""

    @abc.abstractmethod
    def daemon(self, config: Config, *, observers: Sequence[object] = (),
               serve_metrics: bool = False) -> DaemonSession:
        """A daemon for ``config`` with ``observers`` (objects with ``@hookimpl`` methods) registered
        as plugins; metrics served only when asked."""


CommandRun = Callable[[CommandContext], int]
CommandArguments = Callable[[argparse.ArgumentParser], None]


@dataclass(frozen=True)
class Command:
    """One contributed subcommand."""

    name: str
    run: CommandRun
    help: str
    description: str
    arguments: CommandArguments | None
    plugin: str
    #: Its exit codes, shown by ``hotplugd NAME --help`` as "exit status: ...".
    exit_status: str = ""
    #: Takes the core's config flags (``--config``, ``--set``, ``--backend``, ``--ratio``, ``--log-level``).
    config_flags: bool = True


class CommandRegistry:
    """Where plugins add their subcommands: ``commands.add("name", run, help=...)``."""

    def __init__(self, reserved: Sequence[str] = ()) -> None:
        self._commands: dict[str, Command] = {}
        self._reserved = frozenset(reserved)
        self._plugin = "?"

    def _registering_for(self, plugin: str) -> None:
        self._plugin = plugin

    def add(self, name: str, run: CommandRun, *, help: str, description: str = "", exit_status: str = "",
            arguments: CommandArguments | None = None, config_flags: bool = True) -> None:
        """Add subcommand ``name``: ``arguments(parser)`` adds its options, ``run(ctx)`` returns its exit code.

        ``help`` is its line in ``hotplugd --help``; ``description`` its ``hotplugd NAME --help`` text (what
        it does), ``exit_status`` what each exit code means (``"0: ...; 78: a flag is wrong"``). A name the
        core or another plugin has is a :class:`hotplugd.PluginError`, and so is a name that is not
        lower-case letters, digits and dashes.
        """
        if not isinstance(name, str) or not NAME.fullmatch(name):
            raise PluginError(f"plugin {self._plugin!r}: command name {name!r} is not lower-case letters, digits "
                              "and dashes (at most 32)")
        if name in self._reserved or name in self._commands:
            owner = "hotplugd" if name in self._reserved else f"plugin {self._commands[name].plugin!r}"
            raise PluginError(f"plugin {self._plugin!r}: command {name!r} is taken by {owner}")
        if not callable(run) or (arguments is not None and not callable(arguments)):
            raise PluginError(f"plugin {self._plugin!r}: command {name!r} needs callables for run and arguments")
        self._commands[name] = Command(name, run, str(help), str(description), arguments, self._plugin,
                                       str(exit_status), bool(config_flags))

    def drop(self, plugin: str) -> list[str]:
        """Forget every command of ``plugin`` (its contribution failed); their names."""
        names = [n for n, c in self._commands.items() if c.plugin == plugin]
        for name in names:
            del self._commands[name]
        return names

    def commands(self) -> list[Command]:
        return [self._commands[n] for n in sorted(self._commands)]
