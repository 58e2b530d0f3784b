"""Config checks that need the plugins: their own ``[plugins.<name>]`` tables, and ``disabled_plugins``."""

from __future__ import annotations

import importlib.metadata

from hotplugd.config import Config, ConfigProblem, raise_problems
from hotplugd.plugin.hooks import Hooks
from hotplugd.plugin.manager import ENTRY_POINT_GROUP, PluginManager


def installed_plugins(pm: PluginManager) -> set[str]:
    """Plugins installed as entry points (loaded or blocked) and plugins registered directly."""
    names = {ep.name for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP)}
    registered = {name for name, plugin in pm.list_name_plugin() if plugin is not None}
    return names | {name for name in registered if not name.startswith("hotplugd.")}


def check_plugin_config(pm: PluginManager, config: Config) -> None:
    """Ask every plugin to validate its table; raise one ConfigError listing all problems."""
    problems: list[ConfigProblem] = []
    known = {name for name, _ in pm.list_name_plugin()}
    for name in config.plugins:
        if name not in known and not pm.is_blocked(name):
            problems.append(ConfigProblem(
                f"plugins.{name}", "no such plugin is loaded",
                f"loaded plugins: {', '.join(sorted(n for n in known if not n.startswith('hotplugd.')))}"))
    installed = installed_plugins(pm)
    for name in config.disabled_plugins:  # a typo would leave the plugin meant to be off running
        if name not in installed:
            problems.append(ConfigProblem("disabled_plugins", f"no installed plugin is named {name!r}",
                                          f"installed plugins: {', '.join(sorted(installed))}"))
    problems.extend(Hooks(pm).check_config(config.plugins, config))
    raise_problems(problems, config.source)
