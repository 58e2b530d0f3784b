"""What a backend onlines, which one reads this machine, and the backends the help names: each plugin says it
(``registry.add(..., subject=...)``, ``hotplugd_host_backend``); the core names no backend of its own."""

from __future__ import annotations

from pathlib import Path

import pytest

from hotplugd import BackendRegistry, BackendSubject, PluginError
from hotplugd.commands import cli
from hotplugd.commands.cli import main, reading_backend
from hotplugd.config import Config
from hotplugd.plugin.hooks import Hooks
from hotplugd.plugin.manager import DISABLE_ENV, make_manager

from .fakes import Installed

CXL = """
from hotplugd import BackendSubject, HostBackend, hookimpl

@hookimpl
def hotplugd_register_backends(registry):
    registry.add("{name}", lambda options: None, summary="a CXL switch",
                 subject=lambda table: BackendSubject(f"this host's CXL memory on {{table.get('switch', 'sw0')}}",
                                                      "this host's switch", host=True))

@hookimpl
def hotplugd_host_backend(config):
    return HostBackend("{name}", "the CXL switch answers")
"""


@pytest.fixture(autouse=True)
def no_installed_config(monkeypatch, tmp_path):
    """An /etc/hotplugd/hotplugd.toml on the machine running the tests must not change what they see."""
    monkeypatch.setattr(cli, "DEFAULT_PATH", tmp_path / "absent.toml")
    monkeypatch.delenv(DISABLE_ENV, raising=False)


def test_the_registry_gives_each_backends_own_subject():
    registry = BackendRegistry()
    registry._registering_for("test")
    registry.add("fixed", lambda options: None, subject=BackendSubject("a fixed thing", "there", model=True))
    registry.add("mine", lambda options: None,
                 subject=lambda table: BackendSubject(f"blocks of {table.get('dir', '/x')}", "here", host=True))
    registry.add("plain", lambda options: None)
    assert registry.subject("mine", {"dir": "/srv"}) == BackendSubject("blocks of /srv", "here", host=True)
    assert registry.subject("mine").text == "blocks of /x"
    assert registry.subject("fixed").model and registry.subject("fixed").where == "there"
    assert registry.subject("plain") == registry.subject("unknown") == BackendSubject()
    assert BackendSubject().where == "the host" and not BackendSubject().model and not BackendSubject().host
    assert registry.choices() == ["mine", "fixed"]  # those reading this host, then the models; never "plain"


@pytest.mark.parametrize("subject", [lambda table: table["missing"], lambda table: "this host"])
def test_a_subject_that_fails_is_the_plugins_error_by_name(subject):
    registry = BackendRegistry()
    registry._registering_for("cxl")
    registry.add("cxl", lambda options: None, subject=subject)
    with pytest.raises(PluginError, match="backend 'cxl' \\(plugin 'cxl'\\)"):
        registry.subject("cxl", {})


def test_the_built_in_backends_say_what_they_online():
    hooks = Hooks(make_manager(environ={}))
    sysfs = hooks.backend_subject("sysfs", {"root": "/srv/fake"})
    assert sysfs == BackendSubject("this host (its memory under /srv/fake)", "this host", host=True)
    assert hooks.backend_subject("sysfs", {}).text == "this host (its memory under /sys)"
    simulated = hooks.backend_subject("simulated", {})
    assert simulated.model and not simulated.host and simulated.where == "the simulated host"
    assert "exists only inside a running daemon" in simulated.absent
    assert hooks.backend_subject("qga").text == "the guests' memory, through their qemu-guest-agent"
    assert hooks.backend_subject("libvirt").where == "the guests"
    assert hooks.backends().choices() == ["sysfs", "simulated"]


def test_a_third_party_host_backend_is_chosen_and_named_in_the_help(installed: Installed, capsys):
    installed.keep_real()
    installed.add("cxl", CXL)
    config = Config()
    assert reading_backend(config, Hooks(make_manager(environ={}))) == " (no backend chosen: the CXL switch answers)"
    assert config.backend == "cxl"
    with pytest.raises(SystemExit):
        main(["run", "--help"])
    out = " ".join(capsys.readouterr().out.split())
    assert "`--backend cxl` (or backend = \"cxl\" in the config) for this host's memory" in out
    assert "(no backend chosen: --backend cxl or sysfs or simulated)" in out
    assert "(overrides `backend`): cxl, libvirt, qga, simulated, sysfs" in out
    assert main(["check-config"]) == 0
    assert "`run` needs --backend cxl or sysfs or simulated;" in capsys.readouterr().out


def test_without_memory_blocks_here_the_model_answers_last_and_says_why(tmp_path: Path, capsys):
    root = tmp_path / "nosys"
    assert main(["check", "--set", f'plugins.sysfs.root="{root}"']) == 0
    first = capsys.readouterr().out.splitlines()[0]
    assert first.startswith("backend simulated: a simulated host, not this machine: ")
    assert first.endswith(f" (no backend chosen, and this machine has no {root}/devices/system/memory)")


def test_with_the_host_plugin_disabled_the_model_answers_alone(monkeypatch, capsys):
    monkeypatch.setenv(DISABLE_ENV, "sysfs")
    assert main(["check"]) == 0
    first = capsys.readouterr().out.splitlines()[0]
    assert first.startswith("backend simulated: a simulated host") and first.endswith(" (no backend chosen)")


def test_no_plugin_reading_this_machine_is_a_config_error(monkeypatch, capsys):
    monkeypatch.setenv(DISABLE_ENV, "sysfs,simulated")
    assert main(["check"]) == 78
    assert main(["restore-knobs"]) == 78
    err = capsys.readouterr().err
    assert "no backend chosen" in err and "no plugin says it reads this machine" in err
    assert "no installed backend reads this host's kernel knobs" in err
    assert "Traceback" not in err
