"""The command line: ``hotplugd run | plugins | status | check | check-config | restore-knobs | install-files``,
and the plugins' commands.

User errors (HotplugdError) print one message, no traceback, and exit with
their code (78 for configuration errors, so systemd stops restarting).
"""

from __future__ import annotations

import argparse
import functools
import sys
from collections.abc import Sequence
from pathlib import Path

import anyio

from hotplugd import __version__
from hotplugd.commands.contributed import CliContext, add_contributed
from hotplugd.config import DEFAULT_PATH, LOG_LEVELS, Config, check_flag, load
from hotplugd.errors import EXIT_FAILURE, ConfigError, HotplugdError
from hotplugd.observe import logs
from hotplugd.plugin.backend import BackendRegistry
from hotplugd.plugin.commands import CommandRegistry
from hotplugd.plugin.hooks import Hooks
from hotplugd.plugin.manager import NO_BACKEND, NO_BACKEND_HINT, make_manager
from hotplugd.plugin.validation import check_plugin_config
from hotplugd.tomlfile import parse_override

#: Exit codes every subcommand shares (sysexits' EX_CONFIG for anything wrong in a config or flag).
#: ``{choices}``: the installed backends to choose from (those reading this host, then the models).
_EXITS = {
    "run": "0: stopped by SIGTERM/SIGINT; 1: failed (the error is printed); 2: usage error; 78: a config or flag is "
           "wrong, or the plan cannot be honoured (no backend chosen: {choices})",
    "plugins": "0: listed; 2: usage error; 78: the config is wrong",
    "status": "0: the daemon answers; 3: it does not (as `systemctl status`); 2: usage error; "
              "78: a config or flag is wrong",
    "check": "0: nothing in the way of the plan; 1: conflicts, or something it cannot know (a guest that does not "
             "answer); 2: usage error; 78: a config or flag is wrong, or `run` would refuse it",
    "check-config": "0: valid; 2: usage error; 78: invalid (every problem is named)",
    "restore-knobs": "0: restored, or nothing recorded; 1: a knob could not be written back (the record is kept); "
                     "2: usage error; 78: a config or flag is wrong",
    "install-files": "0: done; 1: a file could not be written or removed (named; the other steps are done); "
                     "2: usage error; 78: the config or a plugin is wrong (nothing is written)",
}
#: ``{needs}``: how each backend to choose from is chosen; ``{host}``: those that read this host.
_DESCRIPTIONS = {
    "run": "Run the daemon: make the plan (who onlines: the kernel, set up and proven by hotplugd, or hotplugd "
           "itself), set the kernel's knobs, then online or verify every hot-added block. It needs a backend: "
           "{needs}.",
    "plugins": "List the plugins, their versions and hooks, and the backends they register.",
    "status": "The running daemon's memory blocks and view (who onlines, pending, phases, errors), read from its "
              "metrics endpoint; when it does not answer, this host's blocks. The first line names the backend: "
              "with no config and no --backend, this host's own ({host}) where it has memory blocks.",
    "check": "The pre-flight: the plan (who onlines and why, each knob as it reads and as the plan sets it, which "
             "plugin's zone hook takes the onlining from the kernel), then what `run` would refuse, what cannot be "
             "known, and other onliners against the plan. Reads only. With no config and no --backend it reads "
             "this host ({host}) where it has memory blocks.",
    "check-config": "Validate a config (and the --set/flag values) without starting anything.",
    "restore-knobs": "On uninstall (the Debian package's prerm, systemd/install.py --uninstall), with the service "
                     "stopped: write the kernel's onlining knobs back as hotplugd first found them, from "
                     "<state_directory>/kernel-knobs.json, then remove the record (and the state directory when "
                     "it held nothing else). This host's knobs, whatever backend the config runs.",
    "install-files": "What the plugins install beside hotplugd's units (hotplugd_install_files), written under "
                     "--root and said step by step: systemd/install.py runs it with the hotplugd it installs the "
                     "units for. The config is <root>/etc/hotplugd/hotplugd.toml where it exists (--config: "
                     "another). With --uninstall, what they wrote is removed.",
}


def choices_text(registry: BackendRegistry) -> str:
    """``--backend A or B``: the backends to name where one must be chosen, as the plugins registered them."""
    names = registry.choices()
    return f"--backend {' or '.join(names)}" if names else "--backend NAME (`hotplugd plugins` lists them)"


def _needs(registry: BackendRegistry) -> str:
    """How ``run`` is given each backend to choose from, in the words of what it onlines."""
    parts = []
    for name in registry.choices():
        subject = registry.subject(name)
        parts.append(f"`--backend {name}` (or backend = \"{name}\" in the config) for this host's memory"
                     if subject.host else f"`--backend {name}` to try it on a modelled host")
    return ", ".join(parts) or "`--backend NAME` (`hotplugd plugins` lists them)"


def _sub(sub: argparse._SubParsersAction, name: str, help: str, registry: BackendRegistry) -> argparse.ArgumentParser:
    host = " or ".join(n for n in registry.names() if registry.subject(n).host) or "none installed"
    description = _DESCRIPTIONS[name].format(needs=_needs(registry), host=host)
    return sub.add_parser(name, help=help, description=description,
                          epilog=f"exit status: {_EXITS[name].format(choices=choices_text(registry))}")


def _config_args(p: argparse.ArgumentParser, names: Sequence[str] = ()) -> None:
    p.add_argument("-c", "--config", type=Path, help=f"TOML config (default: {DEFAULT_PATH} if it exists)")
    p.add_argument("-s", "--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config key, e.g. --set scheduler.settle=0.1 (repeatable)")
    p.add_argument("--backend", help="backend name (overrides `backend`)" + (f": {', '.join(names)}" if names else ""))
    p.add_argument("--ratio", metavar="R", help="parallel_hotplug_ratio (overrides scheduler.parallel_hotplug_ratio)")
    p.add_argument("--log-level", metavar="LEVEL", help=f"{' | '.join(LOG_LEVELS)} (overrides log_level)")


def build_parser(contributed: CommandRegistry | None = None,
                 backends: BackendRegistry | None = None) -> argparse.ArgumentParser:
    """The core's commands, then the plugins' (``hotplugd_add_commands``: ``contributed``); the help names the
    backends the plugins register (``backends``; by default those of every plugin installed)."""
    registry = backends if backends is not None else Hooks(make_manager()).backends()
    config_args = functools.partial(_config_args, names=registry.names())
    parser = argparse.ArgumentParser(prog="hotplugd",
                                     description="Online hot-added memory fast, safely and observably.",
                                     epilog="`hotplugd COMMAND --help` describes each command and its exit status.")
    parser.add_argument("--version", action="version", version=f"hotplugd {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = _sub(sub, "run", f"run the daemon (needs a backend: {choices_text(registry)})", registry)
    config_args(run)
    run.add_argument("--ready-file", type=Path, help="write the pid here once ready, removed at exit (scripts, tests)")

    plugins = _sub(sub, "plugins", "list plugins, their versions, hooks and backends", registry)
    plugins.add_argument("-c", "--config", type=Path, help="config (for disabled_plugins)")

    status = _sub(sub, "status", "the running daemon's memory and view; this host's blocks when it does not answer",
                  registry)
    config_args(status)

    conflicts = _sub(sub, "check", "the pre-flight: the plan, and what would refuse or compete with it; "
                                   "exit 1 on conflicts, 78 where run would refuse", registry)
    config_args(conflicts)

    check = _sub(sub, "check-config", "validate a config file and exit", registry)
    config_args(check)

    restore = _sub(sub, "restore-knobs", "on uninstall, with the service stopped: the kernel's onlining knobs "
                                         "written back as hotplugd first found them; exit 1 if any could not be",
                   registry)
    config_args(restore)

    files = _sub(sub, "install-files", "what the plugins install beside the units (systemd/install.py runs it)",
                 registry)
    files.add_argument("-c", "--config", type=Path,
                       help="the config to install for (default: ROOT/etc/hotplugd/hotplugd.toml if it exists)")
    files.add_argument("--root", type=Path, default=Path("/"), help="install under this root (default /)")
    files.add_argument("--unit-dir", default="/etc/systemd/system", help="where hotplugd.service is installed")
    files.add_argument("--with", dest="features", action="append", default=[], metavar="NAME",
                       help="install what a plugin's NAME needs ahead of the config naming it (repeatable)")
    files.add_argument("--without", dest="skip", action="append", default=[], metavar="NAME",
                       help="leave a plugin's NAME alone (repeatable)")
    files.add_argument("--uninstall", action="store_true", help="remove what the plugins install")
    for p in sub.choices.values():
        p.formatter_class = argparse.RawDescriptionHelpFormatter
    if contributed is not None:
        add_contributed(sub, contributed, config_args)
    return parser


def config_from_args(args: argparse.Namespace, *, force_backend: str | None = None) -> Config:
    """The config file (or the default one) with the flags applied; each flag's value is checked like the
    key it sets, and a bad one is a ConfigError naming the flag (exit 78)."""
    path = args.config
    if path is None and DEFAULT_PATH.exists():
        path = DEFAULT_PATH
    overrides = list(getattr(args, "overrides", []))
    for text in overrides:  # each --set checked on its own first, so its error names the flag
        keys, value = parse_override(text)
        check_flag("--set", ".".join(keys), value, text)
    backend = force_backend or getattr(args, "backend", None)
    if backend is not None:
        check_flag("--backend", "backend", backend)
        overrides.append(f"backend={_toml_string(backend)}")
    if getattr(args, "ratio", None) is not None:
        ratio = check_flag("--ratio", "scheduler.parallel_hotplug_ratio", _number(args.ratio), args.ratio)
        overrides.append(f"scheduler.parallel_hotplug_ratio={ratio!r}")
    if getattr(args, "log_level", None) is not None:
        check_flag("--log-level", "log_level", args.log_level)
        overrides.append(f"log_level={_toml_string(args.log_level)}")
    ready = getattr(args, "ready_file", None)
    if ready is not None and not ready.parent.is_dir():
        raise ConfigError(f"--ready-file {str(ready)!r}: {ready.parent} is not a directory")
    args.overrides = overrides
    return load(path, overrides)


def _number(text: str) -> float | str:
    """A flag's text as a number where it is one (else the text, which the key's check then refuses)."""
    try:
        return float(text)
    except ValueError:
        return text


def reading_backend(config: Config, hooks: Hooks) -> str:
    """``check`` and ``status`` with no backend chosen read this host: the backend a plugin says reads it
    (``hotplugd_host_backend``; a model's plugin answers last, as the fallback). Sets ``config.backend``;
    returns a note for the first line saying why ("" when the backend was chosen)."""
    if config.backend:
        return ""
    answer, declined = hooks.host_backend(config)
    if answer is None or answer.backend is None:
        raise ConfigError(f"{NO_BACKEND}, and no plugin says it reads this machine"
                          + "".join(f"; {reason}" for reason in declined), hint=NO_BACKEND_HINT)
    config.backend = answer.backend
    if answer.reason:
        return f" (no backend chosen: {answer.reason})"
    return " (no backend chosen" + "".join(f", and {reason}" for reason in declined) + ")"


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
    hooks = Hooks(pm)
    note = reading_backend(config, hooks)
    check_plugin_config(pm, config)
    return status(config, build_backend(pm, config), hooks=hooks, note=note)


def cmd_check(args: argparse.Namespace) -> int:
    from hotplugd.commands.check import check
    from hotplugd.plugin.hooks import Hooks
    from hotplugd.plugin.manager import build_backend

    config = config_from_args(args)
    pm = make_manager(config.disabled_plugins)
    hooks = Hooks(pm)
    note = reading_backend(config, hooks)
    check_plugin_config(pm, config)
    return check(config, hooks, build_backend(pm, config), note=note)


def cmd_check_config(args: argparse.Namespace) -> int:
    config = config_from_args(args)
    pm = make_manager(config.disabled_plugins)
    check_plugin_config(pm, config)
    registry = Hooks(pm).backends()
    names = registry.names()
    if not config.backend:
        print(f"{config.source or 'defaults'}: OK (no backend chosen: `run` needs {choices_text(registry)}; "
              "`check` and `status` read this host)")
        return 0
    if config.backend not in names:
        raise ConfigError(f"unknown backend {config.backend!r}; installed backends: {', '.join(names)}")
    print(f"{config.source or 'defaults'}: OK (backend {config.backend})")
    return 0


def cmd_restore_knobs(args: argparse.Namespace) -> int:
    from hotplugd.commands.restore import restore_knobs
    from hotplugd.plugin.manager import build_backend

    # The record is of this host's kernel, whatever backend the config runs: the backend that reads it.
    config = config_from_args(args)
    pm = make_manager(config.disabled_plugins)
    registry = Hooks(pm).backends()
    host = [name for name in registry.names() if registry.subject(name, config.plugins.get(name, {})).host]
    if not host:
        raise ConfigError("no installed backend reads this host's kernel knobs: nothing to restore them through",
                          hint="`hotplugd plugins` lists the backends; one that reads this host is needed")
    config.backend = host[0]
    check_plugin_config(pm, config)
    return restore_knobs(config, build_backend(pm, config))


def cmd_install_files(args: argparse.Namespace) -> int:
    from hotplugd.commands.install_files import install_files, under

    if not args.root.is_absolute():
        raise ConfigError(f"--root {str(args.root)!r}: an absolute path is needed")
    if args.uninstall:  # every plugin removes what it may have written, whatever the config says now
        config, pm = Config(), make_manager()
    else:
        path = args.config or under(args.root, DEFAULT_PATH)
        config = load(path if args.config or path.is_file() else None)
        pm = make_manager(config.disabled_plugins)
        check_plugin_config(pm, config)
    return install_files(config, Hooks(pm), args.root, args.unit_dir, args.features, args.skip,
                         uninstall=args.uninstall)


COMMANDS = {"run": cmd_run, "plugins": cmd_plugins, "check-config": cmd_check_config, "check": cmd_check,
            "status": cmd_status, "restore-knobs": cmd_restore_knobs, "install-files": cmd_install_files}


def main(argv: Sequence[str] | None = None) -> int:
    logs.configure()  # to stderr: a plugin failing to load while the parser is built
    hooks = Hooks(make_manager())
    contributed = hooks.add_commands(reserved=list(COMMANDS))
    args = build_parser(contributed, hooks.backends()).parse_args(argv)
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
