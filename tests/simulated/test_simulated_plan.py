"""The simulated kernel has the real knobs: the plan is made and applied as on a real host (issue 23, item 1),
the first screen says who onlined and gives one measured time against one serial time, and a scenario
always ends (item 4)."""

from __future__ import annotations

import io
import re

import anyio
import pytest
from rich.console import Console

from hotplugd import BackendError, Executor
from hotplugd.commands.cli import main
from hotplugd.commands.contributed import Session
from hotplugd.config import from_mapping
from hotplugd.plugin.manager import make_manager
from hotplugd.testing import HookRecorder
from hotplugd_simulated.backend import SimulatedBackend
from hotplugd_simulated.simulate import simulate

SMALL = 'plugins.simulated.scenario=[{kind="dimm", size="1GiB"}, {kind="virtio-mem", size="1GiB", node=1}]'


def play(sim: dict, zones: dict | None = None, **scheduler):
    config = from_mapping({"backend": "simulated", "metrics": {"enabled": False}, "scheduler": scheduler,
                           "zones": zones or {},
                           "plugins": {"simulated": {"add_interval": 0, **sim}}})
    recorder = HookRecorder()
    pm = make_manager()
    pm.register(recorder, name="recorder")
    out = io.StringIO()
    sessions: list[Session] = []

    def daemon(config, **kwargs):
        sessions.append(Session(config, pm, **kwargs))
        return sessions[0]

    code, summary = simulate(config, daemon, progress=False, console=Console(file=out, width=120))
    return code, summary, recorder, out.getvalue(), sessions[0]


def cli(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(["simulate", "--no-progress", *argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_the_simulated_kernel_has_the_real_knobs_and_refuses_what_a_kernel_refuses():
    backend = SimulatedBackend.from_options({"kernel": "anolis", "kernel_ratio": 30})
    knobs = anyio.run(backend.kernel_knobs)
    assert knobs.values == {"auto_online_blocks": "offline", "online_policy": "contig-zones",
                            "auto_movable_ratio": "301", "auto_movable_numa_aware": "Y",
                            "parallel_hotplug_ratio": "30"}
    assert "parallel_hotplug_ratio" not in anyio.run(SimulatedBackend.from_options({}).kernel_knobs).values
    anyio.run(backend.set_kernel_knobs, {"parallel_hotplug_ratio": "50", "auto_online_blocks": "online_movable"})
    assert backend.host.knobs.ratio == 50 and backend.host.knobs.kernel_onlines
    for bad in ({"auto_online_blocks": "sometimes"}, {"parallel_hotplug_ratio": "101"}, {"nope": "1"}):
        with pytest.raises(BackendError):
            anyio.run(backend.set_kernel_knobs, bad)
    locked = SimulatedBackend.from_options({"read_only_knobs": ["auto_online_blocks"]})
    assert not anyio.run(locked.kernel_knobs).writable("auto_online_blocks")
    with pytest.raises(BackendError, match="EROFS"):
        anyio.run(locked.set_kernel_knobs, {"auto_online_blocks": "online"})


def test_on_mainline_the_kernel_onlines_and_hotplugd_proves_every_block():
    code, summary, recorder, out, session = play({"scenario": [{"kind": "dimm", "size": "2GiB"}]})
    assert code == 0
    assert session.plan.onliner is Executor.KERNEL and session.plan.written == {"auto_online_blocks": "online"}
    assert summary.by_kernel == summary.onlined == 16 and summary.by_hotplugd == 0
    assert not summary.phases  # hotplugd wrote nothing: no phase, no "phases serial" on mainline
    assert all(r.attempts == 0 and r.result.outcome.value == "onlined" for r in recorder.reports)
    assert "16 by the kernel, each read back, zone-checked, timed and counted" in out
    assert "phases" not in out


def test_the_kernels_own_onlining_follows_the_zone_knobs_and_hotplugd_checks_each_zone():
    code, summary, recorder, _, session = play({"scenario": [{"kind": "dimm", "size": "1GiB"}]},
                                               zones={"policy": "movable"})
    assert code == 0 and session.plan.written == {"auto_online_blocks": "online_movable"}
    assert summary.by_kernel == 8 and {r.result.zone for r in recorder.reports} == {"Movable"}
    assert all(r.requested.value == "online_movable" for r in recorder.reports)  # the promise it was checked against


def test_on_the_seeds_kernel_hotplugd_sets_its_ratio_and_watches_the_half_online_blocks():
    sim = {"kernel": "anolis", "nodes": 1, "cpus_per_node": 4, "scenario": [{"kind": "virtio-mem", "size": "2GiB"}]}
    code, summary, recorder, out, session = play(sim, parallel_hotplug_ratio=0.5)
    assert code == 0
    assert session.plan.written == {"parallel_hotplug_ratio": "50", "auto_online_blocks": "online"}
    assert session.backend.host.knobs.ratio == 50 and session.backend.host.workers == 2
    assert summary.by_kernel == 16
    assert "the kernel onlines" in out and "parallel_hotplug_ratio=50" in out


def test_the_first_screen_names_the_kernel_the_scenario_who_onlined_and_two_defined_times(capsys):
    code, out, _ = cli(capsys, "--kernel", "per-block", "--set", SMALL)
    assert code == 0
    first = out.split("this scenario on each kernel")[0]
    assert first.startswith("hotplugd simulate: per-block parallel kernel")
    assert "1.0 GiB DIMM on node 0, then 1.0 GiB virtio-mem on node 1" in first
    assert "plan" in first and "the kernel onlines" in first
    times = [line for line in first.splitlines() if re.match(r"(time|serial) ", line)]
    assert [t.split()[0] for t in times] == ["time", "serial"]
    assert "from the first block added to the last one online" in first
    assert "one at a time, the normal way" in first
    assert first.count(" s ") + first.count(" s\n") == 2  # exactly two times on the first screen
    table = out.split("this scenario on each kernel")[1]
    assert "per-block parallel" in table  # the kernel played is in its own table


def test_ratio_0_is_titled_as_ratio_0(capsys):
    code, out, _ = cli(capsys, "--ratio", "0", "--set", SMALL)
    assert code == 0 and "each kernel at ratio 0" in out and "against ratio 1" not in out


def test_blocks_stuck_half_online_end_the_run_with_one_error(capsys):
    """The seed's kernel booted with its ratio set and auto-online off, knobs hotplugd cannot write: hotplugd's
    writes leave every block half-online (it hung forever, one error line per block)."""
    code, out, err = cli(capsys, "--kernel", "anolis", "--set", SMALL, "--set", "scheduler.kernel_phase_timeout=0.3",
                         "--set", "plugins.simulated.kernel_ratio=100",
                         "--set", 'plugins.simulated.read_only_knobs=["auto_online_blocks", "parallel_hotplug_ratio"]',
                         "--log-level", "warning")
    assert code == 1
    assert re.search(r"hotplugd: error: 16 blocks left half-online: the kernel held them past\s+"
                     r"scheduler.kernel_phase_timeout \(0.3 s\)", out)
    assert err.count('"kernel_deferred_stuck"') == 1  # one line, not one per block


def test_an_onliner_the_kernel_cannot_be_is_refused_up_front(capsys):
    code, out, err = cli(capsys, "--set", 'scheduler.onliner="kernel"', "--set", SMALL,
                         "--set", 'plugins.simulated.read_only_knobs=["auto_online_blocks"]')
    assert code == 78
    assert 'scheduler.onliner = "kernel" cannot be honoured' in err and "read-only" in err
    assert "Traceback" not in err and "ExceptionGroup" not in err and out == ""


def test_the_kernel_onliner_where_the_kernel_can_is_honoured(capsys):
    code, out, _ = cli(capsys, "--set", 'scheduler.onliner="kernel"', "--set", SMALL)
    assert code == 0 and "16 by the kernel" in out


@pytest.mark.parametrize(("argv", "flag"), [
    (["--kernel", "linux-2.4"], "--kernel"),
    (["--backend", "sysfs"], "--backend sysfs"),
    (["--size", "1GiB"], "--size"),
    (["--ratio", "abc"], "--ratio 'abc'"),  # exited 2 (argparse)
    (["--from-host", "/nonexistent", "--kernel", "anolis"], "--kernel: not with --from-host"),
    (["--from-host", "/nonexistent", "--ratio", "0.5"], "--ratio: not with --from-host"),
    (["--from-host", "/nonexistent", "--metrics"], "--metrics: not with --from-host"),
])
def test_flags_simulate_cannot_honour_exit_78_naming_the_flag(capsys, argv, flag):
    code, out, err = cli(capsys, *argv)
    assert code == 78 and err.startswith(f"hotplugd: error: {flag}") and "Traceback" not in err
