"""Generated command lines thrown at every subcommand in-process (the plugins' ``simulate`` too): a documented
exit code, one message, never a traceback or a hang, bounded memory (the property and the fence: ``clifuzz.py``).

``bench/fuzz_cli.py`` runs the same property for 100,000 inputs.
"""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from .clifuzz import harness

pytestmark = pytest.mark.reliability



@pytest.fixture(scope="module")
def fenced():
    with harness() as h:
        yield h


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                   HealthCheck.too_slow])
@given(rng=st.randoms(use_true_random=False))
def test_every_command_line_answers_with_a_documented_exit_code(fenced, rng):
    fenced.run(fenced.argv(rng))


@pytest.mark.parametrize("argv", [
    ["check", "--log-level", "loud"], ["status", "--ratio", "abc"], ["run", "--ratio", "1e999"],
    ["check-config", "--set", "scheduler"], ["check", "--backend", ""],
    ["status", "--set", 'metrics.address="10.0.0.1"'], ["plugins", "--config", "/nonexistent/x"],
    # what the first 55,000 inputs of bench/fuzz_cli.py found in simulate (ZeroDivisionError, MemoryError,
    # OverflowError, an ExceptionGroup on a busy port), each refused or reported now
    ["simulate", "--no-progress", "--size", "128MiB", "--from-host", "TREE"],
    ["simulate", "--no-progress", "--size", "18446744073709551616", "--from-host", "TREE"],
    ["simulate", "--no-progress", "--size", "1000000000000000000000000000000", "--from-host", "TREE"],
])
def test_known_lines_keep_the_property(fenced, argv):
    code, message = fenced.run([str(fenced.fake.sys) if arg == "TREE" else arg for arg in argv])
    assert code in (0, 1, 3, 78), message


def test_a_sysfs_run_plays_on_the_fake_tree_and_writes_only_inside_the_harness(fenced):
    code, message = fenced.run(["run", "--backend", "sysfs", "--set", 'state_directory="/var/lib/hotplugd"',
                                "--set", 'metrics.textfile="/etc/hotplugd.prom"', "--set", "metrics.port=0"])
    assert code == 0, message
    assert any((fenced.base / "scratch" / "state").iterdir())  # the knobs' record, in the scratch directory
    assert (fenced.base / "scratch" / "hotplugd.prom").exists()
    assert fenced.fake.knob("auto_online_blocks") != "offline"  # the plan set the fake kernel's knob


def test_the_property_catches_a_traceback(fenced, monkeypatch):
    """The check itself can fail: a command that raises is reported, not swallowed."""
    from hotplugd.commands import cli

    def broken(_args):
        raise RuntimeError("boom")

    monkeypatch.setitem(cli.COMMANDS, "check-config", broken)
    with pytest.raises(RuntimeError, match="boom"):
        fenced.run(["check-config"])


def test_simulate_serving_metrics_on_a_busy_port_is_an_error_not_a_traceback(fenced):
    import socket

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        code, message = fenced.run(["simulate", "--no-progress", "--metrics",
                                    "--set", f"metrics.port={busy.getsockname()[1]}"])
    assert code in (1, 78) and "Address already in use" in message, message
