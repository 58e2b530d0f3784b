"""``hotplugd plugins``: installed plugins with versions and hooks, and the backends they register."""

from __future__ import annotations

import pytest

from hotplugd import __version__
from hotplugd.commands.cli import main
from hotplugd.plugin.manager import DISABLE_ENV

from .fakes import EXPLODES, GOOD, TYPO, Installed, rows


@pytest.fixture
def installed(installed: Installed) -> Installed:
    """The fake plugins next to the really installed ones."""
    installed.keep_real()
    return installed


def test_lists_plugins_versions_hooks_and_backends(installed, capsys):
    installed.add("cxl", GOOD, version="2.3.1")
    assert main(["plugins"]) == 0
    out = capsys.readouterr().out
    plugins = rows(out, "plugins")
    assert plugins["simulated"][:2] == [f"hotplugd {__version__}", "hotplugd_simulated"]
    assert set(plugins["simulated"][2].split()) >= {"hotplugd_check_config", "hotplugd_register_backends"}
    assert plugins["cxl"][0] == "hotplugd-cxl 2.3.1"
    assert set(plugins["cxl"][2].split()) == {"hotplugd_block_outcome", "hotplugd_register_backends"}
    assert plugins["hotplugd.builtin"] == ["built-in", "hotplugd.plugin.builtin", "hotplugd_choose_zone"]
    backends = rows(out, "backends")
    assert backends["cxl"] == ["cxl", "a test backend"]
    assert backends["simulated"][0] == "simulated"


def test_disabled_plugins_from_config_and_environment_are_not_listed(installed, capsys, tmp_path, monkeypatch):
    installed.add("cxl", GOOD)
    config = tmp_path / "hotplugd.toml"
    config.write_text('disabled_plugins = ["cxl"]\n')
    assert main(["plugins", "--config", str(config)]) == 0
    listed = capsys.readouterr().out
    assert "cxl" not in rows(listed, "plugins") and "cxl" not in rows(listed, "backends")
    assert "simulated" in rows(listed, "plugins")

    monkeypatch.setenv(DISABLE_ENV, "simulated")
    assert main(["plugins"]) == 0
    listed = capsys.readouterr().out
    assert "simulated" not in rows(listed, "plugins") and "simulated" not in rows(listed, "backends")
    assert "cxl" in rows(listed, "plugins")


@pytest.mark.parametrize(("source", "expected"), [
    (EXPLODES, "plugin 'cxl' (entry point "),
    (TYPO, "plugin 'cxl' (hotplugd_test_cxl_"),
])
def test_a_broken_plugin_is_listed_as_failed_with_its_error_and_the_others_run(installed, capsys, source, expected):
    installed.add("cxl", source)
    assert main(["plugins"]) == 0
    captured = capsys.readouterr()
    plugins = rows(captured.out, "plugins")
    assert plugins["cxl"][0] == "FAILED" and plugins["cxl"][1].startswith(expected)
    assert "simulated" in plugins and "simulated" in rows(captured.out, "backends")
    assert "Traceback" not in captured.err and "Traceback" not in captured.out


def test_a_broken_plugin_can_be_blocked_to_get_going_again(installed, capsys, monkeypatch):
    installed.add("cxl", EXPLODES)
    monkeypatch.setenv(DISABLE_ENV, "cxl")
    assert main(["plugins"]) == 0
    assert "simulated" in rows(capsys.readouterr().out, "plugins")
