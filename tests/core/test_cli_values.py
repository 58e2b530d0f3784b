"""The command line's values are checked like config values (exit 78 naming the flag), sizes reach EiB,
and every subcommand's help says what it does and what its exit status means."""

from __future__ import annotations

import pytest

from hotplugd import config as cfgmod
from hotplugd.commands.cli import build_parser, main
from hotplugd.units import format_bytes, parse_size

SUBCOMMANDS = ["run", "plugins", "status", "check", "check-config"]


@pytest.mark.parametrize(("argv", "flag"), [
    (["check", "--log-level", "loud"], "--log-level 'loud'"),
    (["status", "--log-level", ""], "--log-level ''"),
    (["run", "--ratio", "abc"], "--ratio 'abc'"),
    (["check-config", "--ratio", "-1"], "--ratio '-1'"),
    (["check", "--ratio", "nan"], "--ratio 'nan'"),
    (["check", "--ratio", "1e999"], "--ratio '1e999'"),
    (["run", "--backend", "simulated", "--ready-file", "/nonexistent/dir/ready"], "--ready-file"),
    (["check-config", "--set", "scheduler"], "--set 'scheduler'"),
    (["check", "--set", "scheduler.settle=soon"], "--set 'scheduler.settle=soon'"),
    (["run", "--set", "scheduler=1"], "--set 'scheduler=1'"),
    (["status", "--set", 'zones.nodes.01.policy="movable"'], "--set 'zones.nodes.01.policy=\"movable\"'"),
    (["simulate", "--log-level", "loud"], "--log-level 'loud'"),  # a plugin's command: the core's flags, checked
    (["simulate", "--ratio", "abc", "--no-progress"], "--ratio 'abc'"),
])
def test_a_bad_flag_value_exits_78_naming_the_flag(argv, flag, capsys):
    assert main(argv) == 78
    err = capsys.readouterr().err
    assert err.startswith(f"hotplugd: error: {flag}"), err
    assert "Traceback" not in err


def test_a_good_flag_value_is_applied(capsys):
    assert main(["check-config", "--ratio", "0.5", "--log-level", "debug", "--backend", "simulated"]) == 0
    assert "OK (backend simulated)" in capsys.readouterr().out


@pytest.mark.parametrize("command", SUBCOMMANDS)
def test_every_subcommand_has_a_description_and_its_exit_status(command, capsys):
    with pytest.raises(SystemExit) as exited:
        main([command, "--help"])
    assert exited.value.code == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "exit status: 0:" in out and "78" in out
    description = build_parser()._subparsers._group_actions[0].choices[command].description  # noqa: SLF001
    assert description and " ".join(description.split())[:60] in out


def test_the_top_level_help_says_what_check_exits_on(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    out = " ".join(capsys.readouterr().out.split())
    assert "kernel auto-online" not in out  # the kernel onlining is the default plan, not a conflict
    assert "78 where run would refuse" in out


def test_sizes_reach_exbibytes():
    assert parse_size("1PiB") == 1 << 50 and parse_size("2 EiB") == 2 << 60 and parse_size("1PB") == 10**15
    assert format_bytes(1 << 50) == "1.0 PiB" and format_bytes(3 << 60) == "3.0 EiB"
    assert cfgmod.load(None, ['scheduler.max_offline_bytes="16EiB"']).scheduler.max_offline_bytes == 1 << 64
    with pytest.raises(cfgmod.ConfigError, match="max_offline_bytes"):
        cfgmod.load(None, ['scheduler.max_offline_bytes="17EiB"'])


def test_an_error_about_a_key_carries_its_help_not_a_checkout_path(capsys):
    assert main(["check-config", "--set", "scheduler.settle=soon"]) == 78
    err = capsys.readouterr().err
    assert "config/hotplugd.toml" not in err
    assert "settle: start the phase when no add event came for this long; default 0.05" in err
