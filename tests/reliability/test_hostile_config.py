"""Hostile or mistaken configuration: refused before anything runs, naming the input, without a traceback.

As root, a config file that another user can write is someone else's way to
run the daemon's backend; unknown backend and plugin names are refused with
the list of what is installed, so a typo never silently changes what runs.
"""

from __future__ import annotations

import importlib.metadata
import os
from pathlib import Path

import pytest

from hotplugd.commands.cli import main
from hotplugd.errors import EXIT_CONFIG
from hotplugd.plugin.manager import ENTRY_POINT_GROUP, backend_registry, make_manager

pytestmark = pytest.mark.reliability

root_only = pytest.mark.skipif(os.geteuid() != 0, reason="the permission check applies when running as root")


def installed_plugins() -> list[str]:
    return sorted(ep.name for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP))


def config_file(tmp_path: Path, text: str = 'backend = "simulated"\n', mode: int = 0o644) -> Path:
    path = tmp_path / "hotplugd.toml"
    path.write_text(text)
    path.chmod(mode)
    return path


def refused(capsys: pytest.CaptureFixture[str], *argv: str) -> str:
    code = main(list(argv))
    err = capsys.readouterr().err
    assert code == EXIT_CONFIG, err
    assert "Traceback" not in err
    return err


@root_only
@pytest.mark.parametrize("mode", [0o666, 0o646, 0o664, 0o620])
@pytest.mark.parametrize("command", ["check-config", "run"])
def test_a_config_others_can_write_is_refused_as_root(tmp_path, capsys, mode, command):
    path = config_file(tmp_path, mode=mode)
    err = refused(capsys, command, "--config", str(path))
    assert f"refusing {path}" in err and "writable by users other than root" in err
    assert "chmod 644" in err


@root_only
def test_a_config_owned_by_another_user_is_refused_as_root(tmp_path, capsys):
    path = config_file(tmp_path)
    os.chown(path, 65534, 65534)
    err = refused(capsys, "check-config", "--config", str(path))
    assert f"refusing {path}" in err and "uid 65534" in err


@root_only
def test_a_root_owned_config_only_root_can_write_is_accepted(tmp_path, capsys):
    path = config_file(tmp_path)
    assert main(["check-config", "--config", str(path)]) == 0
    assert "OK" in capsys.readouterr().out


@pytest.mark.parametrize("command", ["check-config", "run"])
def test_an_unknown_backend_is_refused_with_the_installed_ones(capsys, command):
    err = refused(capsys, command, "--backend", "simulatd")
    assert "unknown backend 'simulatd'" in err
    assert f"installed backends: {', '.join(backend_registry(make_manager()).names())}" in err


def test_a_table_for_an_unknown_plugin_is_refused_with_the_loaded_ones(tmp_path, capsys):
    path = config_file(tmp_path, 'backend = "simulated"\n[plugins.simulatd]\nseed = 1\n')
    err = refused(capsys, "check-config", "--config", str(path))
    assert "plugins.simulatd: no such plugin is loaded" in err
    assert all(name in err for name in installed_plugins())


def test_disabling_an_unknown_plugin_is_refused_with_the_installed_ones(tmp_path, capsys):
    """A typo in ``disabled_plugins`` would leave the plugin meant to be off running."""
    path = config_file(tmp_path, 'backend = "simulated"\ndisabled_plugins = ["sysfss"]\n')
    err = refused(capsys, "check-config", "--config", str(path))
    assert "disabled_plugins" in err and "'sysfss'" in err
    assert all(name in err for name in installed_plugins())


def test_disabling_an_installed_plugin_is_fine(tmp_path, capsys):
    path = config_file(tmp_path, 'backend = "simulated"\ndisabled_plugins = ["sysfs"]\n')
    assert main(["check-config", "--config", str(path)]) == 0, capsys.readouterr().err


# -- a file that is not a config: refused with exit 78 naming it, never a traceback -----------------


@pytest.mark.parametrize("command", ["check-config", "run", "status"])
def test_a_file_that_is_not_utf8_is_refused_with_the_byte_and_line(tmp_path, capsys, command):
    path = tmp_path / "hotplugd.toml"
    path.write_bytes(b'backend = "simulated"\n# caf\xe9 in Latin-1\n')
    err = refused(capsys, command, "--config", str(path))
    assert f"{path} is not UTF-8: byte 0xe9 at line 2" in err and "iconv" in err


@pytest.mark.parametrize("opener", ["[", "{a=", "[{a=["])
def test_a_file_nested_thousands_deep_is_refused_before_parsing(tmp_path, capsys, opener):
    path = config_file(tmp_path, "x = " + opener * 5000 + "\n")
    err = refused(capsys, "check-config", "--config", str(path))
    assert f"{path} nests tables or arrays deeper than 16" in err


def test_brackets_inside_strings_and_comments_do_not_count_as_nesting(tmp_path, capsys):
    text = 'backend = "simulated" # [[[[[[[[[[[[[[[[[[[[\n'
    text += '[plugins.simulated]\nstate_file = "[{[{[{[{[{[{[{[{[{[{[{[{"\n'
    text += "scenario = [{kind = 'dimm', size = '1GiB', node = 0, at = 0.0}]\n"
    path = config_file(tmp_path, text + "# '''" + "[" * 40 + "\n")
    assert main(["check-config", "--config", str(path)]) == 0, capsys.readouterr().err


def test_a_table_nested_deep_by_dotted_keys_is_refused(tmp_path, capsys):
    path = config_file(tmp_path, "[plugins.simulated]\n" + ".".join(["a"] * 3000) + " = 1\n")
    err = refused(capsys, "check-config", "--config", str(path))
    assert "plugins.simulated.a.a." in err and "nested deeper than 16 tables or arrays" in err


def test_a_set_value_nested_thousands_deep_is_refused(capsys):
    err = refused(capsys, "check-config", "--set", "plugins.simulated.seed=" + "[" * 5000)
    assert "--set plugins.simulated.seed nests tables or arrays deeper than 16" in err


def test_a_directory_is_refused(tmp_path, capsys):
    err = refused(capsys, "check-config", "--config", str(tmp_path))
    assert f"config file {tmp_path} is a directory" in err


def test_a_file_too_large_to_be_a_config_is_refused(tmp_path, capsys):
    path = config_file(tmp_path, 'backend = "simulated"\n' + "# padding\n" * 110_000)
    err = refused(capsys, "check-config", "--config", str(path))
    assert f"config file {path} is larger than 1048576 bytes" in err


def test_an_integer_of_thousands_of_digits_is_refused(tmp_path, capsys):
    path = config_file(tmp_path, "[plugins.simulated]\nseed = " + "9" * 5000 + "\n")
    err = refused(capsys, "check-config", "--config", str(path))
    assert f"{path} is not valid TOML" in err and "digits" in err


def test_a_config_that_is_a_fifo_is_refused_without_blocking(tmp_path, capsys):
    path = tmp_path / "hotplugd.toml"
    os.mkfifo(path)
    err = refused(capsys, "check-config", "--config", str(path))
    assert f"config file {path} is not a regular file" in err
