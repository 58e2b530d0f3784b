"""Config checks that need the plugins: their own ``[plugins.<name>]`` tables."""

from __future__ import annotations

from .config import Config, ConfigProblem, raise_problems
from .plugins import PluginManager, call_checked


def check_plugin_config(pm: PluginManager, config: Config) -> None:
    """Ask every plugin to validate its table; raise one ConfigError listing all problems."""
    problems: list[ConfigProblem] = []
    known = {name for name, _ in pm.list_name_plugin()}
    for name in config.plugins:
        if name not in known and not pm.is_blocked(name):
            problems.append(ConfigProblem(
                f"plugins.{name}", "no such plugin is loaded",
                f"loaded plugins: {', '.join(sorted(n for n in known if not n.startswith('hotplugd.')))}"))
    for result in call_checked(pm.hook.hotplugd_check_config, plugins=config.plugins, config=config):
        problems.extend(result)
    raise_problems(problems, config.source)
