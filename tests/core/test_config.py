"""Configuration: the documented file, overrides, and errors that name the file, key and a hint."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from hotplugd import config as cfgmod
from hotplugd.commands.cli import main
from hotplugd.errors import EXIT_CONFIG, ConfigError

ROOT = Path(__file__).resolve().parents[2]
REFERENCE = ROOT / "config" / "hotplugd.toml"


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "hotplugd.toml"
    path.write_text(text)
    path.chmod(0o644)
    return path


def test_reference_config_loads_and_equals_the_defaults():
    loaded = cfgmod.load(REFERENCE)
    defaults = cfgmod.Config()
    loaded.source = None
    loaded.plugins.pop("simulated", None)
    loaded.plugins.pop("sysfs", None)
    loaded.plugins.pop("qga", None)
    loaded.plugins.pop("libvirt", None)
    assert loaded == defaults


def test_reference_config_documents_every_key():
    text = REFERENCE.read_text()
    for key, _default, help_text in cfgmod.describe():
        leaf = key.rsplit(".", 1)[-1]
        if key in ("plugins", "zones.nodes"):  # tables of tables
            assert re.search(rf"^#? ?\[{re.escape(key)}\.", text, re.M), f"[{key}.*] is not in {REFERENCE.name}"
            continue
        assert re.search(rf"^#? ?{re.escape(leaf)} =", text, re.M), f"{key} is not in {REFERENCE.name}"
        assert help_text, f"{key} has no help text"


def test_sizes_and_durations_accept_units(tmp_path):
    path = write(tmp_path, '[scheduler]\nsettle = "150ms"\nmax_offline_bytes = "2GiB"\n')
    config = cfgmod.load(path)
    assert config.scheduler.settle == pytest.approx(0.15)
    assert config.scheduler.max_offline_bytes == 2 << 30


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("[scheduler]\nsetle = 0.1\n", "scheduler.setle: unknown key (did you mean scheduler.settle?)"),
        ("[scheduler]\nparallel_hotplug_ratio = 'two'\n", "scheduler.parallel_hotplug_ratio: expected a number"),
        ("[scheduler]\nparallel_hotplug_ratio = -1\n", "scheduler.parallel_hotplug_ratio: must be between 0 and 64"),
        ("[zones]\npolicy = 'sideways'\n", "zones.policy: expected one of auto, kernel, movable, auto-movable"),
        ("[zones.nodes.x]\npolicy = 'kernel'\n", "zones.nodes.x: expected a node number"),
        ("scheduler = 3\n", "scheduler: expected a table"),
        ("[metrics]\nport = 70000\n", "metrics.port: must be between 0 and 65535"),
        ("[scheduler]\nmax_offline_bytes = '1 zettabyte'\n", "scheduler.max_offline_bytes: expected a size"),
    ],
)
def test_bad_values_name_the_file_and_key(tmp_path, text, needle):
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        cfgmod.load(path)
    assert needle in str(info.value)
    assert str(path) in str(info.value)
    assert info.value.exit_code == EXIT_CONFIG


def test_every_problem_is_reported_at_once(tmp_path):
    path = write(tmp_path, "bogus = 1\n[scheduler]\nsettle = 'soon'\n")
    message = str(pytest.raises(ConfigError, cfgmod.load, path).value)
    assert "bogus: unknown key" in message and "scheduler.settle" in message


def test_invalid_toml_is_a_config_error(tmp_path):
    path = write(tmp_path, "[scheduler\n")
    assert "is not valid TOML" in str(pytest.raises(ConfigError, cfgmod.load, path).value)


def test_missing_file_is_named(tmp_path):
    assert "does not exist" in str(pytest.raises(ConfigError, cfgmod.load, tmp_path / "nope.toml").value)


def test_overrides_beat_the_file(tmp_path):
    path = write(tmp_path, "[scheduler]\nsettle = 0.5\n")
    config = cfgmod.load(path, ["scheduler.settle=0.1", 'zones.policy="movable"', "backend=simulated"])
    assert config.scheduler.settle == pytest.approx(0.1)
    assert config.zones.policy == "movable" and config.backend == "simulated"


def test_bad_override_is_refused():
    with pytest.raises(ConfigError, match="expected KEY=VALUE"):
        cfgmod.load(None, ["scheduler.settle"])


@pytest.mark.skipif(os.geteuid() != 0, reason="the permission rule applies when running as root")
def test_config_writable_by_others_is_refused_as_root(tmp_path):
    path = write(tmp_path, "")
    path.chmod(0o666)
    message = str(pytest.raises(ConfigError, cfgmod.load, path).value)
    assert "writable by users other than root" in message and "chmod 644" in message


def test_cli_exits_78_with_a_clear_message(tmp_path, capsys):
    path = write(tmp_path, "[scheduler]\nsetle = 0.1\n")
    assert main(["check-config", "--config", str(path)]) == EXIT_CONFIG
    err = capsys.readouterr().err
    assert err.startswith("hotplugd: error: invalid configuration in") and "Traceback" not in err


def test_cli_unknown_backend_lists_the_installed_ones(tmp_path, capsys):
    path = write(tmp_path, 'backend = "nosuch"\n')
    assert main(["check-config", "--config", str(path)]) == EXIT_CONFIG
    assert "unknown backend 'nosuch'; installed backends: " in capsys.readouterr().err


def test_plugin_table_is_validated_by_its_plugin(tmp_path, capsys):
    path = write(tmp_path, "[plugins.simulated]\nlock = 'sometimes'\nnodez = 2\n")
    assert main(["check-config", "--config", str(path)]) == EXIT_CONFIG
    err = capsys.readouterr().err
    assert "plugins.simulated.lock: expected one of global, per-node, none" in err
    assert "plugins.simulated.nodez: unknown key" in err


def test_table_for_a_plugin_that_is_not_installed(tmp_path, capsys):
    path = write(tmp_path, "[plugins.nosuch]\nx = 1\n")
    assert main(["check-config", "--config", str(path)]) == EXIT_CONFIG
    assert "plugins.nosuch: no such plugin is loaded" in capsys.readouterr().err


# -- bounds: sizes no machine has are refused with the reason, not run for hours ------------------


@pytest.mark.parametrize(
    ("override", "needle", "reason"),
    [
        ("scheduler.max_pending_blocks=" + "9" * 23, "must be between 1 and 137438953472", "2^64 / 128 MiB"),
        ("scheduler.max_pending_blocks=137438953473", "must be between 1 and 137438953472", "2^64 / 128 MiB"),
        ('scheduler.max_offline_bytes="17000000TiB"', "must be between 0 and 18446744073709551616", "64-bit"),
        (f'scheduler.max_offline_bytes="{"9" * 400}B"', "must be between 0 and", "64-bit"),
        ("scheduler.settle=1e400", "got inf", "a day"),
        ("scheduler.max_defer=nan", "got nan", "a day"),
        ('scheduler.retry_failed_after="90000s"', "must be between 0 and 86400", "a day"),
        ("scheduler.parallel_hotplug_ratio=nan", "got nan", "per CPU"),
        ("scheduler.max_memmap_share=inf", "got inf", "MemAvailable"),
        ('zones.nodes.1024.policy="kernel"', "zones.nodes.1024: node numbers are below 1024", "MAX_NUMNODES"),
        ("plugins.simulated.nodes=nan", "plugins.simulated.nodes: nan is not a setting", "64 bits"),
        ("plugins.simulated.seed=99999999999999999999", "plugins.simulated.seed: 99999999999999999999", "64 bits"),
        ("plugins.qga.guest=[{name=\"a\", concurrency=1e999}]", "plugins.qga.guest[0].concurrency: inf", "64 bits"),
    ],
)
def test_numbers_past_every_machine_are_refused_with_the_reason(override, needle, reason):
    message = str(pytest.raises(ConfigError, cfgmod.load, None, [override]).value)
    assert needle in message and reason in message, message


def test_the_largest_sane_values_are_accepted():
    config = cfgmod.load(None, ["scheduler.max_pending_blocks=137438953472", "scheduler.settle=86400",
                                'scheduler.max_offline_bytes="16777216TiB"', 'zones.nodes.1023.policy="kernel"'])
    assert config.scheduler.max_pending_blocks == cfgmod.MAX_BLOCKS == 2**64 // (128 << 20)
    assert config.scheduler.max_offline_bytes == 2**64 and "1023" in config.zones.nodes


def test_a_node_number_in_another_spelling_is_refused():
    """``[zones.nodes.01]`` would never match node 1: silently ignored until now."""
    message = str(pytest.raises(ConfigError, cfgmod.load, None, ['zones.nodes.01.policy="kernel"']).value)
    assert "zones.nodes.01: expected a node number" in message


@pytest.mark.parametrize(
    ("override", "needle"),
    [
        ("zones.nodes.1.policy={a=[1]}", "zones.nodes.1.policy: expected one of"),
        ("plugins.simulated=[1]", "plugins.simulated: expected a table, got [1]"),
        ("scheduler.settle.x.y=1", "scheduler.settle: expected a duration"),
        ("metrics.port=[[1]]", "metrics.port: expected a number"),
        ("disabled_plugins=[[\"a\"]]", "disabled_plugins: expected a list of strings"),
    ],
)
def test_a_wrong_type_at_any_depth_names_its_key(override, needle):
    assert needle in str(pytest.raises(ConfigError, cfgmod.load, None, [override]).value)


@pytest.mark.parametrize("text", ["a..b=1", ".=1", "scheduler.=1", " =1"])
def test_an_override_with_an_empty_key_part_is_refused(text):
    assert "expected KEY=VALUE" in str(pytest.raises(ConfigError, cfgmod.load, None, [text]).value)
