"""The command line: ``hotplugd run | plugins | status | check | check-config``, and the plugins' commands.

User errors (HotplugdError) print one message, no traceback, and exit with
their code (78 for configuration errors, so systemd stops restarting).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

import anyio

from hotplugd import __version__
from hotplugd.commands.contributed import CliContext, add_contributed
from hotplugd.config import DEFAULT_PATH, Config, load
from hotplugd.errors import EXIT_FAILURE, HotplugdError
from hotplugd.observe import logs
from hotplugd.plugin.commands import CommandRegistry
from hotplugd.plugin.hooks import Hooks
from hotplugd.plugin.manager import make_manager
from hotplugd.plugin.validation import check_plugin_config


def _config_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("-c", "--config", type=Path, help=f"TOML config (default: {DEFAULT_PATH} if it exists)")
    p.add_argument("-s", "--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config key, e.g. --set scheduler.settle=0.1 (repeatable)")
    p.add_argument("--backend", help="backend name (overrides `backend`)")
    p.add_argument("--ratio", type=float, help="parallel_hotplug_ratio (overrides scheduler.parallel_hotplug_ratio)")
    p.add_argument("--log-level", choices=["debug", "info", "warning", "error"])


def build_parser(contributed: CommandRegistry | None = None) -> argparse.ArgumentParser:
    """The core's commands, then the plugins' (``hotplugd_add_commands``: ``contributed``)."""
    parser = argparse.ArgumentParser(prog="hotplugd", description="Online hot-added memory fast, safely and observably.")
    parser.add_argument("--version", action="version", version=f"hotplugd {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = sub.add_parser("run", help="run the daemon")
    _config_args(run)
    run.add_argument("--ready-file", type=Path, help="write the pid here once ready (for scripts and tests)")

    plugins = sub.add_parser("plugins", help="list plugins, their versions, hooks and backends")
    plugins.add_argument("-c", "--config", type=Path, help="config (for disabled_plugins)")

    status = sub.add_parser("status", help="memory blocks per node, zone and state, and the running daemon's view")
    _config_args(status)

    conflicts = sub.add_parser("check", help="report other onliners (kernel auto-online, udev rules); exit 1 if any")
    _config_args(conflicts)

    check = sub.add_parser("check-config", help="validate a config file and exit")
    _config_args(check)
    if contributed is not None:
        add_contributed(sub, contributed, _config_args)
    return parser


def config_from_args(args: argparse.Namespace, *, force_backend: str | None = None) -> Config:
    path = args.config
    if path is None and DEFAULT_PATH.exists():
        path = DEFAULT_PATH
    overrides = list(getattr(args, "overrides", []))
    backend = force_backend or getattr(args, "backend", None)
    if backend:
        overrides.append(f"backend={_toml_string(backend)}")
    if getattr(args, "ratio", None) is not None:
        overrides.append(f"scheduler.parallel_hotplug_ratio={args.ratio}")
    if getattr(args, "log_level", None):
        overrides.append(f"log_level={_toml_string(args.log_level)}")
    args.overrides = overrides
    return load(path, overrides)


def _toml_string(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def cmd_run(args: argparse.Namespace) -> int:
    import faulthandler

    from hotplugd.daemon import Daemon

    # A watchdog kill (SIGABRT) then leaves every thread's stack in the journal.
    try:
        faulthandler.enable()
    except (ValueError, OSError):  # io.UnsupportedOperation: stderr is not a real file (embedding, tests)
        pass
    config = config_from_args(args)
    logs.configure(config.log_level, config.log_format)
    pm = make_manager(config.disabled_plugins)
    daemon = Daemon(config, pm, overrides=args.overrides, ready_file=args.ready_file)
    anyio.run(daemon.run)
    return 0


def _load_for_plugin(args: argparse.Namespace, backend: str | None, first: Sequence[str]) -> Config:
    """A contributed command's config: its ``first`` overrides, then the user's flags (which win)."""
    mine = argparse.Namespace(**vars(args))
    mine.overrides = [*first, *getattr(args, "overrides", [])]
    return config_from_args(mine, force_backend=backend)


def cmd_plugins(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.table import Table

    from hotplugd.plugin.manager import backend_registry, describe_plugins

    config = load(args.config) if args.config else Config()
    pm = make_manager(config.disabled_plugins)
    registry = backend_registry(pm)  # first: a plugin failing to register its backends shows as failed
    # In a pipe rich would assume 80 columns and cut names short; scripts grep this output.
    console = Console() if sys.stdout.isatty() else Console(width=200)
    table = Table(title="plugins")
    for column in ("name", "version", "module", "hooks"):
        table.add_column(column)
    for row in describe_plugins(pm):
        table.add_row(row["name"], row["version"], row["module"], "\n".join(row["hooks"]))
    console.print(table)
    backends = Table(title="backends")
    for column in ("backend", "plugin", "summary"):
        backends.add_column(column)
    for entry in registry.entries():
        backends.add_row(entry.name, entry.plugin, entry.summary)
    console.print(backends)
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    from hotplugd.commands.status import status
    from hotplugd.plugin.hooks import Hooks
    from hotplugd.plugin.manager import build_backend

    config = config_from_args(args)
    pm = make_manager(config.disabled_plugins)
    check_plugin_config(pm, config)
    return status(config, build_backend(pm, config), hooks=Hooks(pm))


def cmd_check(args: argparse.Namespace) -> int:
    from hotplugd.commands.check import check
    from hotplugd.plugin.hooks import Hooks
    from hotplugd.plugin.manager import build_backend

    config = config_from_args(args)
    pm = make_manager(config.disabled_plugins)
    check_plugin_config(pm, config)
    return check(config, Hooks(pm), build_backend(pm, config))


def cmd_check_config(args: argparse.Namespace) -> int:
    config = config_from_args(args)
    pm = make_manager(config.disabled_plugins)
    check_plugin_config(pm, config)
    from hotplugd.plugin.manager import backend_registry

    names = backend_registry(pm).names()
    if config.backend not in names:
        from hotplugd.errors import ConfigError

        raise ConfigError(f"unknown backend {config.backend!r}; installed backends: {', '.join(names)}")
    print(f"{config.source or 'defaults'}: OK (backend {config.backend})")
    return 0


COMMANDS = {"run": cmd_run, "plugins": cmd_plugins, "check-config": cmd_check_config, "check": cmd_check,
            "status": cmd_status}


def main(argv: Sequence[str] | None = None) -> int:
    logs.configure()  # to stderr: a plugin failing to load while the parser is built
    contributed = Hooks(make_manager()).add_commands(reserved=list(COMMANDS))
    args = build_parser(contributed).parse_args(argv)
    try:
        command = getattr(args, "contributed_command", None)
        if command is not None:
            return command.run(CliContext(args, _load_for_plugin))
        return COMMANDS[args.command](args)
    except HotplugdError as exc:
        print(f"hotplugd: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        return 130
    except OSError as exc:
        print(f"hotplugd: error: {exc}", file=sys.stderr)
        return EXIT_FAILURE


if __name__ == "__main__":
    sys.exit(main())
