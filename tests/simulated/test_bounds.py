"""``simulate`` refuses machines no kernel builds for, naming the key, instead of running them."""

from __future__ import annotations

import pytest

from hotplugd.commands.cli import main

BIG = (1 << 63) - 1  # TOML's largest integer: two of them pass a 64-bit physical address space


@pytest.mark.parametrize(("overrides", "key"), [
    (["nodes=100000", "cpus_per_node=1000"], "plugins.simulated.nodes"),  # MAX_NUMNODES is 1024
    (["nodes=16", "cpus_per_node=1000"], "plugins.simulated.cpus_per_node"),  # NR_CPUS is at most 8192
    ([f"scenario=[{{kind='dimm', size={BIG}}}, {{kind='dimm', size={BIG}}}]"], "plugins.simulated.scenario"),
    (["nodes=1024", f"boot_memory={BIG}"], "plugins.simulated.boot_memory"),  # past 2^64 bytes
    (["kernel_ratio=101"], "plugins.simulated.kernel_ratio"),
])
def test_sizes_no_machine_has_exit_78_naming_the_key(capsys, overrides, key):
    argv = ["simulate", "--no-progress"]
    for item in overrides:
        argv += ["--set", f"plugins.simulated.{item}"]
    assert main(argv) == 78
    err = capsys.readouterr().err
    assert f"{key}: " in err and "Traceback" not in err
    assert "expected a" not in err  # refused for its size, not for its spelling


def test_the_largest_machine_is_accepted(capsys):
    argv = ["simulate", "--no-progress", "--set", "plugins.simulated.nodes=1024", "--set",
            "plugins.simulated.cpus_per_node=8", "--set", "plugins.simulated.boot_memory=0", "--set",
            "plugins.simulated.add_interval=0", "--set", 'plugins.simulated.scenario=[{kind="dimm", size="1GiB"}]']
    assert main(argv) == 0


def test_a_scenario_past_the_simulated_hosts_bound_is_refused_before_any_work(capsys):
    """2^56 bytes of 128 MiB blocks fit 64 bits but would be 2^29 objects (over 1 GB): refused, naming the key."""
    argv = ["simulate", "--no-progress", "--set", f"plugins.simulated.scenario=[{{kind='dimm', size={1 << 56}}}]"]
    assert main(argv) == 78
    err = capsys.readouterr().err
    assert "plugins.simulated.scenario: 536870976 blocks" in err and "at most 1048576" in err
