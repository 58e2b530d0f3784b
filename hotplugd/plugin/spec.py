"""Every hook hotplugd calls, in one place.

Hooks are synchronous (pluggy has no async hooks: an ``async def`` firstresult
implementation would return a coroutine, which counts as a result and silently
ends the chain). Async work lives in the backend objects that
``hotplugd_register_backends`` registers.

An implementation may accept fewer arguments than its spec names, so specs can
grow without breaking plugins. Implement with ``hotplugd.hookimpl``::

    from hotplugd import hookimpl

    @hookimpl
    def hotplugd_register_backends(registry):
        registry.add("mybackend", MyBackend)

Every docstring says how the hook is called: *every implementation* (results
collected or ignored) or *firstresult* (the first non-None result wins, the
rest are not called). Hooks marked "isolated" are called one implementation at
a time by the daemon: an implementation that raises is logged with its
plugin's name and the others, and the phase, go on. docs/plugins.md is the
reference for plugin authors; a test keeps it in step with this file.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import pluggy

if TYPE_CHECKING:
    from prometheus_client.registry import CollectorRegistry

    from hotplugd.config import Config, ConfigProblem
    from hotplugd.model import Block, BlockReport, NodeLedger, PhaseInfo, ZoneRequest
    from hotplugd.plugin.backend import BackendRegistry, HostBackend
    from hotplugd.plugin.commands import CommandRegistry
    from hotplugd.plugin.installing import InstallFiles

PROJECT = "hotplugd"
hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


# -- backends -------------------------------------------------------------------


@hookspec
def hotplugd_register_backends(registry: BackendRegistry) -> None:
    """Register backend factories with ``registry.add(name, factory, summary=...)``.

    ``registry`` is a :class:`hotplugd.plugin.backend.BackendRegistry`.
    ``factory(options)`` receives the config table of the backend's name
    (``[plugins.<backend name>]``, a mapping, possibly empty) and returns a
    :class:`hotplugd.plugin.backend.Backend`; only the configured backend is built.
    Every implementation is called, once per daemon (and by ``hotplugd plugins``);
    results are ignored. Two plugins registering the same name is a config error.
    """


@hookspec
def hotplugd_host_backend(config: Config) -> HostBackend | None:
    """Whether your backend reads the machine hotplugd runs on (``check``, ``status``: no backend chosen).

    ``config`` is the :class:`hotplugd.config.Config` with no ``backend`` (neither the file nor
    ``--backend`` chose one; your table: ``config.plugins.get("<name>", {})``). Return a
    :class:`hotplugd.HostBackend`: ``HostBackend("mine", reason)`` when this machine is one your
    backend reads (the ``sysfs`` plugin: its root has ``devices/system/memory``), or
    ``HostBackend(None, reason)`` to say why it is not; None when you have no say. Every
    implementation is called, in hook order (the last registered first; ``tryfirst``/``trylast``
    change that); the first answer that names a backend chooses it, and the reasons of the
    answers before it that named none are printed after "no backend chosen, and ...". A backend
    that is a model answers ``trylast``, as the fallback (the ``simulated`` plugin). Never called
    by ``run``, which needs a backend chosen. No I/O beyond a look at the filesystem. An
    implementation that raises is a plugin error (exit 78).
    """


# -- the command line ----------------------------------------------------------------


@hookspec
def hotplugd_add_commands(commands: CommandRegistry) -> None:
    """Add subcommands to the ``hotplugd`` command line with ``commands.add(name, run, help=...)``.

    ``commands`` is a :class:`hotplugd.plugin.commands.CommandRegistry` (``hotplugd.CommandRegistry``):
    ``add(name, run, help=..., description=..., arguments=..., config_flags=True)``, where
    ``arguments(parser)`` adds the command's options to its ``argparse`` parser and
    ``run(ctx)`` gets a :class:`hotplugd.CommandContext` (the parsed arguments, the config
    as the core loads it, a daemon to drive) and returns the exit code. Every
    implementation is called, once, each time ``hotplugd`` builds its parser (before the
    config is read); results are ignored. Isolated per plugin: an implementation that
    raises, a name already taken, or options that fail or clash leave out that plugin's
    commands only, logged with its name.
    """


@hookspec
def hotplugd_install_files(files: InstallFiles, config: Config) -> None:
    """Say what your plugin installs beside hotplugd's units, and what it removes again on uninstall.

    ``files`` is a :class:`hotplugd.InstallFiles`: ``files.write(path, text, said=..., reload=...)``,
    ``files.remove(path, said=...)``, ``files.say(message)``; ``files.root`` is the install root
    (``/`` or a staging tree; ``files.under("/etc/...")`` is a path under it), ``files.unit_dir``
    where ``hotplugd.service`` goes (under the root: drop-ins in ``hotplugd.service.d``),
    ``files.features`` what the operator asked to install ahead of the config
    (``install.py --with NAME``), ``files.skip`` what to leave alone (``--without NAME``), and
    ``files.uninstall`` whether this is the uninstall (say what to remove of what you wrote).
    ``config`` is the installed config (defaults where there is none yet; on uninstall, always
    the defaults). ``hotplugd install-files``, run by ``systemd/install.py``, carries the steps
    out in order and prints each. Every implementation is called, once; results are ignored.
    Read only: the command writes. An implementation that raises is a plugin error (exit 78) and
    nothing is written.
    """


# -- policy ---------------------------------------------------------------------


@hookspec(firstresult=True)
def hotplugd_choose_zone(
    block: Block, requested: ZoneRequest, ledger: NodeLedger, config: Config
) -> ZoneRequest | None:
    """Choose the zone ``block`` should be onlined into. firstresult.

    ``requested`` is what the configured zone policy asks for this block's node
    (``auto``, ``kernel``, ``movable``, or ``auto-movable`` already resolved
    against the node's movable:kernel ratio); ``ledger`` has the kernel and
    movable bytes online per node of the block's domain (``ledger.kernel[node]``;
    ``block.domain`` is ``"host"`` unless the backend onlines in guests); ``config`` is
    the daemon's current :class:`hotplugd.config.Config` (your own table:
    ``config.plugins.get("<name>", {})``). Return a :class:`ZoneRequest` to
    decide, used as is, or None to pass to the next implementation. The
    built-in one runs last (``trylast``) and returns ``requested`` narrowed to
    the block's ``valid_zones``. Called once per block, before its first
    attempt, from the event loop: no I/O. Isolated: an implementation that
    raises is logged and skipped.
    """


@hookspec
def hotplugd_chooses_zones(config: Config) -> bool | None:
    """Whether your ``hotplugd_choose_zone`` chooses zones under ``config``.

    A plugin implementing ``hotplugd_choose_zone`` takes the onlining from the
    kernel: the plan has hotplugd online every block (the kernel's auto-online
    kept off) so that the hook sees each one, and ``hotplugd check`` says so.
    Return False when it would decline every block under this config (it is
    switched off in its table, or it only watches), so the kernel keeps the
    onlining and ``hotplugd_choose_zone`` is not called for blocks the kernel
    onlines; True or None (or not implementing this hook): it chooses. Every
    implementation is called, at start, on every reload and by ``hotplugd
    check``; each answers for its own plugin, and only the answer of a plugin
    that implements ``hotplugd_choose_zone`` counts. No I/O. An implementation that raises is a plugin error (exit 78
    at start).
    """


# -- observers ------------------------------------------------------------------


@hookspec
def hotplugd_phase_started(phase: PhaseInfo) -> None:
    """A final phase starts: ``phase.trigger`` says why, ``phase.workers`` maps node to workers.

    ``phase`` is a :class:`hotplugd.model.PhaseInfo` (``number``, ``trigger``,
    ``blocks``, ``bytes``, ``workers``, ``domain``). Each domain (the host, or a
    guest) runs its own phases, and phases of different domains may overlap. Every implementation is called;
    results are ignored. Called on the event loop: return quickly. Isolated.
    """


@hookspec
def hotplugd_phase_finished(phase: PhaseInfo, reports: Sequence[BlockReport], seconds: float) -> None:
    """A final phase ended.

    ``phase`` is the same :class:`PhaseInfo` as at the start; ``reports`` holds
    one final :class:`BlockReport` per block it handled (blocks left untouched
    by a stopping daemon have none); ``seconds`` is the phase's duration.
    Every implementation is called; results are ignored. Isolated.
    """


@hookspec
def hotplugd_block_outcome(report: BlockReport) -> None:
    """One block's final outcome in a phase (after retries). Called per block: keep it cheap.

    ``report`` is a :class:`hotplugd.model.BlockReport`: ``block``, ``result``
    (``outcome``, ``zone``, ``errno``, ``detail``), ``requested`` zone,
    ``attempts``, ``seconds`` spent onlining, ``waited`` since the add event.
    Every implementation is called, right after the block's last attempt;
    results are ignored. Isolated.
    """


# -- metrics and config -----------------------------------------------------------


@hookspec
def hotplugd_register_collectors(registry: CollectorRegistry) -> None:
    """Register extra Prometheus collectors on the daemon's own (fresh) registry.

    ``registry`` is a ``prometheus_client.CollectorRegistry``: create metrics
    with ``registry=registry`` or call ``registry.register(collector)``; never
    use the global default registry. Every implementation is called, once,
    when the daemon starts; results are ignored. Isolated.
    """


@hookspec
def hotplugd_check_config(plugins: Mapping[str, Mapping[str, Any]], config: Config) -> list[ConfigProblem] | None:
    """Validate your own table in ``plugins`` (the TOML's ``[plugins.<name>]`` tables).

    ``plugins`` maps each plugin name to its table (absent when not configured);
    ``config`` is the whole :class:`hotplugd.config.Config` being checked.
    Return a list of :class:`hotplugd.config.ConfigProblem` (dotted key such as
    ``plugins.<name>.<key>``, message, hint) or None. Every implementation is
    called and all problems are reported together. Called at start, by
    ``hotplugd check-config`` and on reload; any problem refuses the config
    (exit 78 at start, old config kept on reload).
    """


@hookspec
def hotplugd_configure(table: Mapping[str, Any], config: Config) -> None:
    """Receive your own ``[plugins.<name>]`` table (any plugin: an observer too).

    ``table`` is the table named after your plugin (its entry-point name; an
    empty mapping when the config has none), already accepted by every
    ``hotplugd_check_config``; ``config`` is the whole
    :class:`hotplugd.config.Config`. Called once when the daemon starts, before
    any other hook but ``hotplugd_register_backends`` and
    ``hotplugd_check_config``, and again after each reload that was applied
    (SIGHUP). Every implementation is called, each with its own table;
    results are ignored. An
    implementation that raises is a plugin error (exit 78) at start, and is
    logged and skipped on reload.
    """
