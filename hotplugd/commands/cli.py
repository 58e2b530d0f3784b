"""The command line: ``hotplugd run | simulate | plugins | check-config``.

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
from hotplugd.config import DEFAULT_PATH, Config, load
from hotplugd.errors import EXIT_FAILURE, HotplugdError
from hotplugd.observe import logs
from hotplugd.plugin.manager import make_manager
from hotplugd.plugin.validation import check_plugin_config


def _config_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("-c", "--config", type=Path, help=f"TOML config (default: {DEFAULT_PATH} if it exists)")
    p.add_argument("-s", "--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config key, e.g. --set scheduler.settle=0.1 (repeatable)")
    p.add_argument("--backend", help="backend name (overrides `backend`)")
    p.add_argument("--ratio", type=float, help="parallel_hotplug_ratio (overrides scheduler.parallel_hotplug_ratio)")
    p.add_argument("--log-level", choices=["debug", "info", "warning", "error"])


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="hotplugd", description="Online hot-added memory fast, safely and observably.")
    parser.add_argument("--version", action="version", version=f"hotplugd {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = sub.add_parser("run", help="run the daemon")
    _config_args(run)
    run.add_argument("--ready-file", type=Path, help="write the pid here once ready (for scripts and tests)")

    sim = sub.add_parser("simulate", help="play a hot-add scenario on the simulated backend, end to end")
    _config_args(sim)
    sim.add_argument("--no-progress", action="store_true", help="no progress bar")
    sim.add_argument("--metrics", action="store_true", help="also serve metrics while it runs")
    sim.add_argument("--kernel", help="mainline (default), per-block or anolis (the seed's kernel, auto-online)")
    sim.add_argument("--from-host", nargs="?", const="/sys", metavar="SYSFS_ROOT",
                     help="predict a hot-add on this host's shape, read only from SYSFS_ROOT (default /sys)")
    sim.add_argument("--size", help="with --from-host: the hot-add's size (default: the host's memory)")

    plugins = sub.add_parser("plugins", help="list plugins, their versions, hooks and backends")
    plugins.add_argument("-c", "--config", type=Path, help="config (for disabled_plugins)")

    status = sub.add_parser("status", help="memory blocks per node, zone and state, and the running daemon's view")
    _config_args(status)

    conflicts = sub.add_parser("check", help="report other onliners (kernel auto-online, udev rules); exit 1 if any")
    _config_args(conflicts)

    check = sub.add_parser("check-config", help="validate a config file and exit")
    _config_args(check)
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


def cmd_simulate(args: argparse.Namespace) -> int:
    from hotplugd.commands.simulate import simulate

    if args.kernel:  # before the user's --set, which win
        seeds = ["plugins.simulated.auto_online=true"] if args.kernel == "anolis" else []
        args.overrides = [f"plugins.simulated.kernel={_toml_string(args.kernel)}", *seeds, *args.overrides]
    config = config_from_args(args, force_backend="simulated")
    logs.configure("warning" if not args.log_level else config.log_level, config.log_format)
    pm = make_manager(config.disabled_plugins)
    if args.from_host is not None:
        from hotplugd.commands.whatif import whatif

        return whatif(pm, Path(args.from_host), args.size)
    return simulate(config, pm, progress=not args.no_progress, serve_metrics=args.metrics)


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


COMMANDS = {"run": cmd_run, "simulate": cmd_simulate, "plugins": cmd_plugins, "check-config": cmd_check_config, "check": cmd_check,
            "status": cmd_status}


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
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
