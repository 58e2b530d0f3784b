"""The hook contract in hotplugd/plugin/spec.py: prefixed, synchronous, typed, every argument and call documented."""

from __future__ import annotations

import inspect
from collections.abc import Callable

import pytest

from hotplugd.plugin import spec as hookspecs
from hotplugd.plugin.manager import hook_names, make_manager

MARKER = f"{hookspecs.PROJECT}_spec"
SPECS: dict[str, Callable] = {n: f for n, f in vars(hookspecs).items() if callable(f) and hasattr(f, MARKER)}


def test_the_issue_s_hooks_exist_with_their_semantics():
    firstresult = {n for n, f in SPECS.items() if getattr(f, MARKER).get("firstresult")}
    assert set(SPECS) >= {
        "hotplugd_register_backends", "hotplugd_choose_zone", "hotplugd_phase_started",
        "hotplugd_phase_finished", "hotplugd_block_outcome", "hotplugd_register_collectors",
        "hotplugd_check_config",
    }
    assert firstresult == {"hotplugd_choose_zone"}
    assert hook_names() == sorted(SPECS)


@pytest.mark.parametrize("name", sorted(SPECS))
def test_hook_is_prefixed_synchronous_and_typed(name):
    func = SPECS[name]
    assert name.startswith("hotplugd_")
    assert not inspect.iscoroutinefunction(func) and not inspect.isasyncgenfunction(func)
    sig = inspect.signature(func)
    assert sig.return_annotation is not inspect.Signature.empty
    assert all(p.annotation is not inspect.Parameter.empty for p in sig.parameters.values())


@pytest.mark.parametrize("name", sorted(SPECS))
def test_hook_docstring_names_every_argument_and_how_it_is_called(name):
    func = SPECS[name]
    doc = " ".join((inspect.getdoc(func) or "").split())
    for arg in inspect.signature(func).parameters:
        assert f"``{arg}``" in doc, f"{name}: argument {arg!r} is not documented"
    if getattr(func, MARKER).get("firstresult"):
        assert "firstresult" in doc
    else:
        assert "Every implementation is called" in doc


def test_every_hook_is_registered_on_a_fresh_manager():
    pm = make_manager(load_entry_points=False, environ={})
    assert all(getattr(pm.hook, name).has_spec() for name in SPECS)
