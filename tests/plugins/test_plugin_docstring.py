"""hotplugd.plugin's docstring is the plugin author's quickstart: its example runs, its hooks exist."""

from __future__ import annotations

import re
import textwrap

import hotplugd.plugin
from hotplugd import BackendRegistry
from hotplugd.plugin import spec

DOC = hotplugd.plugin.__doc__ or ""


def _blocks() -> list[str]:
    """The literal blocks (``::`` then an indented block) of the docstring."""
    return [textwrap.dedent(m.group(1)) for m in re.finditer(r"::\n\n((?:    .*\n|\n)+)", DOC)]


def test_the_docstring_is_a_quickstart():
    for needed in ("entry-point group", "[project.entry-points.hotplugd]", "hookimpl", "hotplugd.plugin.spec",
                   "hotplugd.__all__", "docs/plugins.md", "read_table"):
        assert needed in DOC, needed


def test_its_minimal_plugin_runs():
    plugin = _blocks()[-1]
    assert "def hotplugd_register_backends" in plugin
    namespace: dict = {}
    exec(compile(plugin.replace("from .backend import HelloBackend", "HelloBackend = range"), "quickstart", "exec"),
         namespace)
    hooks = {name for name in namespace if name.startswith("hotplugd_")}
    assert hooks and hooks <= set(vars(spec))
    assert namespace["hotplugd_check_config"]({"hello": {"blocks": 8}}) == []
    [problem] = namespace["hotplugd_check_config"]({"hello": {"blocks": -1}})
    assert problem.key == "plugins.hello.blocks" and "between 0 and" in problem.message
    registry = BackendRegistry()
    namespace["hotplugd_register_backends"](registry)
    assert registry.names() == ["hello"]
    assert registry.build("hello", {"blocks": 3}) == range(3)
