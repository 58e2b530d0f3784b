"""``hotplugd_add_commands``: plugins contribute subcommands; a broken contribution never stops the others."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from hotplugd.commands.cli import main

from .fakes import Installed

HELLO = """
from hotplugd import hookimpl


def hello(ctx):
    config = ctx.load_config(overrides=["scheduler.settle=0.5"])
    print(f"hello {{ctx.args.times}} from {{config.backend}}, settle {{config.scheduler.settle}}")
    return 3


@hookimpl
def hotplugd_add_commands(commands):
    commands.add("{name}", hello, help="say hello", description="Say hello.", exit_status="3: said",
                 arguments=lambda parser: parser.add_argument("--times", type=int, default=1))
"""

RAISES = """
from hotplugd import hookimpl

@hookimpl
def hotplugd_add_commands(commands):
    commands.add("half", lambda ctx: 0, help="added before the plugin failed")
    raise RuntimeError("commands are broken")
"""

CLASHES = """
from hotplugd import hookimpl

def arguments(parser):
    parser.add_argument("--config")  # the core's own flag

@hookimpl
def hotplugd_add_commands(commands):
    commands.add("clash", lambda ctx: 0, help="clashes", arguments=arguments)
    commands.add("innocent", lambda ctx: 0, help="comes whole with its plugin or not at all")
"""

TAKES_RUN = """
from hotplugd import hookimpl

@hookimpl
def hotplugd_add_commands(commands):
    commands.add("run", lambda ctx: 0, help="not yours")
"""


@pytest.fixture
def installed(installed: Installed) -> Installed:
    installed.keep_real()
    return installed


def commands_in_help(capsys) -> tuple[set[str], str]:
    """The commands ``hotplugd --help`` lists, and what it logged."""
    with pytest.raises(SystemExit):
        main(["--help"])
    out, err = capsys.readouterr()
    return set(re.findall(r"^    (\w[\w-]*)\s", out, flags=re.MULTILINE)), err


def test_a_plugins_command_runs_with_its_options_and_the_core_config_flags(installed, capsys):
    installed.add("greeter", HELLO.replace("{name}", "hello"))
    assert main(["hello", "--times", "2", "--set", 'backend="sysfs"']) == 3
    assert capsys.readouterr().out.strip() == "hello 2 from sysfs, settle 0.5"
    with pytest.raises(SystemExit):
        main(["hello", "--help"])
    out = capsys.readouterr().out
    assert "Say hello." in out and "exit status: 3: said" in out


def test_the_users_set_wins_over_the_commands_own_overrides(installed, capsys):
    installed.add("greeter", HELLO.replace("{name}", "hello"))
    assert main(["hello", "--set", "scheduler.settle=2"]) == 3
    assert "settle 2.0" in capsys.readouterr().out


@pytest.mark.parametrize("source", [RAISES, CLASHES, TAKES_RUN], ids=["raises", "clashes", "takes-run"])
def test_a_broken_contribution_leaves_the_others(installed, capsys, source):
    installed.add("greeter", HELLO.replace("{name}", "hello"))
    installed.add("broken", source)
    names, logged = commands_in_help(capsys)
    assert {"hello", "simulate", "run", "check"} <= names
    assert not names & {"half", "clash", "innocent"}
    failed = [line for line in logged.splitlines() if "plugin_commands_failed" in line]
    assert failed and all("broken" in line and "greeter" not in line for line in failed)
    assert main(["hello"]) == 3  # the good plugin's command still runs
    if source is TAKES_RUN:
        with pytest.raises(SystemExit):  # the core's run is still the core's
            main(["run", "--help"])
        assert "--ready-file" in capsys.readouterr().out


def test_simulate_is_the_simulated_plugins_and_goes_when_it_is_blocked(installed, capsys, monkeypatch):
    assert "simulate" in commands_in_help(capsys)[0]
    with pytest.raises(SystemExit):
        main(["simulate", "--help"])
    out = " ".join(capsys.readouterr().out.split())
    assert "exit status: 0:" in out and "78" in out and "--from-host" in out
    monkeypatch.setenv("HOTPLUGD_DISABLED_PLUGINS", "simulated")
    assert "simulate" not in commands_in_help(capsys)[0]


CORE = Path(__file__).resolve().parents[2] / "hotplugd"


def test_the_core_calls_no_method_of_the_simulated_plugin_by_name():
    """Issue 25: the what-if and the scenario's extras are the plugin's; the core never reaches for them."""
    names = ("expected_blocks", ".compare(", ".whatif(", "hotplugd_simulated", "simulate(")
    for path in CORE.rglob("*.py"):
        text = path.read_text()
        found = [n for n in names if n in text]
        assert not found, f"{path.relative_to(CORE.parent)} names {found}"
