"""The typed facade the core calls hooks through: one method per hook, keyword arguments only.

No part of the core spells ``pm.hook.<name>``: each method here says how its
hook is called (isolated or checked, every implementation or the first
result) once, and its signature is the spec's (:mod:`hotplugd.plugin.spec`).
The one exception is ``hotplugd_register_backends``: the plugin manager calls it
(:func:`hotplugd.plugin.manager.backend_registry`) to build the backend before
there are hooks to call, and a plugin that fails it is left out there.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import structlog
from prometheus_client.registry import CollectorRegistry

from hotplugd.config import Config, ConfigProblem
from hotplugd.model import Block, BlockReport, NodeLedger, PhaseInfo, ZoneRequest
from hotplugd.plugin.backend import BackendRegistry, BackendSubject, HostBackend
from hotplugd.plugin.commands import CommandRegistry
from hotplugd.plugin.installing import InstallFiles
from hotplugd.plugin.manager import (
    BUILTIN,
    PluginManager,
    backend_registry,
    call_checked,
    call_isolated,
    call_one,
    each_checked,
    first_result_isolated,
)

log = structlog.get_logger(__name__)


class Hooks:
    """Calls into the plugins of one plugin manager."""

    def __init__(self, pm: PluginManager) -> None:
        self.pm = pm

    def __repr__(self) -> str:
        plugins = [name for name, plugin in self.pm.list_name_plugin() if plugin is not None]
        return f"<Hooks {len(plugins)} plugins>"

    # -- start-up: a plugin that raises is a PluginError naming it -------------------

    def check_config(self, plugins: Mapping[str, Mapping[str, Any]], config: Config) -> list[ConfigProblem]:
        """Every plugin's problems with its table (``hotplugd_check_config``)."""
        return [problem for result in call_checked(self.pm.hook.hotplugd_check_config, plugins=plugins,
                                                   config=config) for problem in result]

    def add_commands(self, reserved: Sequence[str]) -> CommandRegistry:
        """Every plugin's subcommands (``hotplugd_add_commands``), ``reserved`` names being the core's.

        Isolated per plugin: one whose implementation raises (a taken name included) keeps
        none of its commands, and is logged by name; the others' commands stay.
        """
        registry = CommandRegistry(reserved)
        for impl in reversed(self.pm.hook.hotplugd_add_commands.get_hookimpls()):
            registry._registering_for(impl.plugin_name)
            try:
                impl.function(*[{"commands": registry}[a] for a in impl.argnames])
            except Exception as exc:  # noqa: BLE001 - a plugin's bug is reported by its name
                dropped = registry.drop(impl.plugin_name)
                log.error("plugin_commands_failed", plugin=impl.plugin_name, error=f"{type(exc).__name__}: {exc}",
                          dropped=dropped)
        return registry

    def zone_hooks(self) -> list[str]:
        """Plugins that implement ``hotplugd_choose_zone``, the core's own built-in aside."""
        return sorted(impl.plugin_name for impl in self.pm.hook.hotplugd_choose_zone.get_hookimpls()
                      if impl.plugin_name != BUILTIN)

    def zone_choosers(self, config: Config | None = None) -> list[str]:
        """Plugins whose ``hotplugd_choose_zone`` chooses zones: those implementing it, less those whose
        ``hotplugd_chooses_zones(config)`` says False (the kernel keeps the onlining)."""
        hooks = self.zone_hooks()
        if config is None or not hooks:
            return hooks
        declined = {impl.plugin_name for impl, answer in each_checked(self.pm.hook.hotplugd_chooses_zones,
                                                                      config=config) if answer is False}
        return [name for name in hooks if name not in declined]

    def backends(self) -> BackendRegistry:
        """Every plugin's backends (``hotplugd_register_backends``; a plugin that fails it is left out)."""
        return backend_registry(self.pm)

    def backend_subject(self, name: str, options: Mapping[str, Any] | None = None) -> BackendSubject:
        """What backend ``name`` onlines under its table ``options``, as its plugin registered it."""
        return self.backends().subject(name, options)

    def host_backend(self, config: Config) -> tuple[HostBackend | None, list[str]]:
        """The first ``hotplugd_host_backend`` answer naming a backend (None: none did), and the reasons
        of the answers before it that named none. Every implementation is called; one that raises is a
        PluginError naming its plugin."""
        declined: list[str] = []
        for _impl, answer in each_checked(self.pm.hook.hotplugd_host_backend, config=config):
            if not isinstance(answer, HostBackend):
                continue
            if answer.backend:
                return answer, declined
            if answer.reason:
                declined.append(answer.reason)
        return None, declined

    def install_files(self, files: InstallFiles, config: Config) -> InstallFiles:
        """Every plugin's files (``hotplugd_install_files``), each step remembering its plugin; one that
        raises is a PluginError naming it."""
        for impl in reversed(self.pm.hook.hotplugd_install_files.get_hookimpls()):
            files._registering_for(impl.plugin_name)
            call_one(impl, "hotplugd_install_files", {"files": files, "config": config}, isolate=False)
        return files

    def configure(self, config: Config, *, isolated: bool = False) -> None:
        """Hand each plugin its own ``[plugins.<name>]`` table (``hotplugd_configure``); at start a plugin
        that raises is a PluginError, on reload (``isolated``) it is logged and skipped."""
        for impl in self.pm.hook.hotplugd_configure.get_hookimpls():
            kwargs = {"table": config.plugins.get(impl.plugin_name, {}), "config": config}
            call_one(impl, "hotplugd_configure", kwargs, isolate=isolated)

    # -- while running: isolated, a plugin that raises is logged and skipped ------------

    def register_collectors(self, registry: CollectorRegistry) -> None:
        call_isolated(self.pm.hook.hotplugd_register_collectors, registry=registry)

    def choose_zone(self, block: Block, requested: ZoneRequest, ledger: NodeLedger,
                    config: Config) -> ZoneRequest | None:
        """The first plugin's zone for ``block`` (None: every implementation passed or failed)."""
        return first_result_isolated(self.pm.hook.hotplugd_choose_zone, expect=ZoneRequest, block=block,
                                     requested=requested, ledger=ledger, config=config)

    def phase_started(self, phase: PhaseInfo) -> None:
        call_isolated(self.pm.hook.hotplugd_phase_started, phase=phase)

    def phase_finished(self, phase: PhaseInfo, reports: Sequence[BlockReport], seconds: float) -> None:
        call_isolated(self.pm.hook.hotplugd_phase_finished, phase=phase, reports=reports, seconds=seconds)

    def block_outcome(self, report: BlockReport) -> None:
        call_isolated(self.pm.hook.hotplugd_block_outcome, report=report)
