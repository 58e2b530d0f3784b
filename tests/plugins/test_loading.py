"""Loading plugins through the ``hotplugd`` entry-point group: blocking, bad hooks, import failures.

Entry points are faked by patching ``importlib.metadata.entry_points`` (as
pluggy's own tests patch ``distributions``); the plugin modules are real files
imported from a temporary folder, so "never imported" is checked for real.
"""

from __future__ import annotations

import importlib.metadata
import sys

import pytest

from hotplugd.config import from_mapping
from hotplugd.errors import EXIT_CONFIG, ConfigError, PluginError
from hotplugd.plugin.manager import (
    DISABLE_ENV,
    ENTRY_POINT_GROUP,
    backend_registry,
    blocked_names,
    build_backend,
    make_manager,
)

from .fakes import (
    ASYNC,
    EXPLODES,
    GOOD,
    REGISTER_RAISES,
    STATEFUL,
    TYPO,
    WRAPPER,
    WRONG_ARGS,
)


def plugin_names(pm) -> set[str]:
    return {name for name, plugin in pm.list_name_plugin() if plugin is not None}


def test_entry_point_plugin_is_loaded_with_its_version_and_backend(installed):
    module = installed.add("cxl", GOOD, version="2.3.1")
    pm = make_manager()
    assert "cxl" in plugin_names(pm)
    assert pm.get_plugin("cxl") is sys.modules[module]
    assert pm.versions["cxl"] == "hotplugd-cxl 2.3.1"
    entry = backend_registry(pm).entries()[0]
    assert (entry.name, entry.plugin, entry.summary) == ("cxl", "cxl", "a test backend")


@pytest.mark.parametrize("how", ["config", "environ", "os.environ"])
def test_blocked_plugin_is_never_imported(installed, monkeypatch, how):
    """A blocked plugin's module is not even imported: a broken one cannot break the daemon."""
    module = installed.add("broken", EXPLODES)
    installed.add("fine", GOOD)
    if how == "config":
        pm = make_manager(["broken"], environ={})
    elif how == "environ":
        pm = make_manager(environ={DISABLE_ENV: "other, broken"})
    else:
        monkeypatch.setenv(DISABLE_ENV, "broken")
        pm = make_manager()
    assert module not in sys.modules
    assert plugin_names(pm) >= {"fine"} and "broken" not in plugin_names(pm)
    assert pm.is_blocked("broken")


def test_blocked_names_merge_config_and_environment():
    assert blocked_names(["a", " b "], {DISABLE_ENV: "c,, d ,"}) == {"a", "b", "c", "d"}
    assert blocked_names([], {}) == set()


def test_blocking_applies_to_directly_registered_plugins_too():
    class Plugin:
        pass

    pm = make_manager(["mine"], load_entry_points=False, extra=[("mine", Plugin())], environ={})
    assert "mine" not in plugin_names(pm)


def test_plugin_failing_to_import_is_named_left_out_and_the_others_load(installed):
    module = installed.add("cxl", EXPLODES)
    installed.add("fine", GOOD.replace("{name}", "fine"))
    pm = make_manager(environ={})
    message = str(pm.failures["cxl"])
    assert f"plugin 'cxl' (entry point '{module}', group 'hotplugd') failed to load" in message
    assert "ImportError: libcxl.so.1: cannot open shared object file" in message
    assert f"{DISABLE_ENV}=cxl" in pm.failures["cxl"].hint
    assert "cxl" not in plugin_names(pm) and "fine" in plugin_names(pm)
    assert backend_registry(pm).names() == ["fine"]


def test_a_config_choosing_the_failed_plugins_backend_is_refused_naming_the_failure(installed):
    installed.add("cxl", EXPLODES)
    pm = make_manager(environ={})
    with pytest.raises(PluginError) as err:
        build_backend(pm, from_mapping({"backend": "cxl"}))
    assert "backend 'cxl' is not available: plugin 'cxl'" in str(err.value)
    assert "libcxl.so.1" in str(err.value)
    assert err.value.exit_code == EXIT_CONFIG


def test_misspelled_hook_leaves_the_plugin_out_with_its_name(installed):
    module = installed.add("typo", TYPO, version="0.4")
    pm = make_manager(environ={})
    message = str(pm.failures["typo"])
    assert f"plugin 'typo' ({module}, hotplugd-typo 0.4) implements an unknown hook 'hotplugd_block_outcom'" in message
    assert "did you mean hotplugd_block_outcome?" in pm.failures["typo"].hint
    assert "typo" not in plugin_names(pm) and pm.is_blocked("typo")


def test_misspelled_hook_in_a_directly_registered_plugin_names_it():
    class Policy:
        from hotplugd import hookimpl

        @hookimpl
        def hotplugd_chose_zone(self, block):
            return None

    expected = r"plugin 'my-policy' \(Policy\) implements an unknown hook 'hotplugd_chose_zone'"
    with pytest.raises(PluginError, match=expected):
        make_manager(load_entry_points=False, extra=[("my-policy", Policy())], environ={})


@pytest.mark.parametrize(("source", "expected"), [
    (WRONG_ARGS, "Argument(s) {'verdict'} are declared in the hookimpl but can not be found in the hookspec"),
    (ASYNC, "implements 'hotplugd_choose_zone' with `async def`; hooks are synchronous"),
    (WRAPPER, "implements 'hotplugd_phase_started' as a wrapper"),
])
def test_implementation_hotplugd_cannot_call_is_refused_by_name(installed, source, expected):
    installed.add("odd", source)
    pm = make_manager(environ={})
    assert "plugin 'odd'" in str(pm.failures["odd"])
    assert expected in str(pm.failures["odd"])
    assert "odd" not in plugin_names(pm)


def test_class_entry_point_gets_a_fresh_instance_per_manager(installed):
    """State of a class-based plugin lives per daemon, not in module globals."""
    module = installed.add("stateful", STATEFUL)
    installed.entry_points[-1] = importlib.metadata.EntryPoint("stateful", f"{module}:Counting", ENTRY_POINT_GROUP)
    first, second = make_manager(environ={}), make_manager(environ={})
    a, b = first.get_plugin("stateful"), second.get_plugin("stateful")
    assert type(a).__name__ == "Counting" and a is not b
    first.hook.hotplugd_block_outcome(report=None)
    assert (a.outcomes, b.outcomes) == (1, 0)


def test_register_backends_raising_leaves_that_plugin_out_naming_it(installed):
    installed.add("cxl", REGISTER_RAISES)
    installed.add("fine", GOOD.replace("{name}", "fine"))
    pm = make_manager(environ={})
    assert backend_registry(pm).names() == ["fine"]
    assert pm.failures["cxl"].args[0] == "plugin 'cxl' failed in hotplugd_register_backends: KeyError: 'CXL_DEVICE'"
    assert "cxl" not in plugin_names(pm)


def test_same_backend_from_two_plugins_is_a_config_error(installed):
    installed.add("one", GOOD.replace("{name}", "shared"))
    installed.add("two", GOOD.replace("{name}", "shared"))
    pm = make_manager(environ={})
    with pytest.raises(ConfigError, match="backend 'shared' is registered twice"):
        backend_registry(pm)


def test_real_installed_entry_points_include_the_built_in_simulated_plugin():
    """No patching: what pip installed into this environment."""
    names = {ep.name for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP)}
    assert "simulated" in names
    pm = make_manager(environ={})
    assert pm.versions["simulated"].startswith("hotplugd ")
    registry = backend_registry(pm)
    assert "simulated" in registry.names()
    assert {e.name: e.plugin for e in registry.entries()}["simulated"] == "simulated"


def test_real_entry_point_blocked_by_environment(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv(DISABLE_ENV, "simulated")
    pm = make_manager()
    assert "simulated" not in backend_registry(pm).names()

