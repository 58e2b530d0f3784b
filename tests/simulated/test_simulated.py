"""The simulated backend end to end through the real daemon, loaded by entry point."""

from __future__ import annotations

import io
from functools import partial

import pytest
from rich.console import Console

from hotplugd.commands.cli import main
from hotplugd.commands.contributed import Session
from hotplugd.config import from_mapping
from hotplugd.plugin.manager import make_manager
from hotplugd.testing import HookRecorder
from hotplugd_simulated.simulate import Summary, simulate

GiB = 1 << 30


def run(sim: dict, **scheduler) -> tuple[int, Summary, HookRecorder, str]:
    """The scenario through the daemon; hotplugd's own onlining unless ``onliner`` says otherwise
    (these tests are about hotplugd's phases; test_plan.py has the kernel's onlining)."""
    scheduler = {"settle": 0.01, "onliner": "hotplugd", **scheduler}
    config = from_mapping({"backend": "simulated", "metrics": {"enabled": False},
                           "scheduler": scheduler, "plugins": {"simulated": sim}})
    recorder = HookRecorder()
    pm = make_manager()
    pm.register(recorder, name="recorder")
    out = io.StringIO()
    code, summary = simulate(config, partial(Session, pm=pm), progress=False, console=Console(file=out, width=100))
    return code, summary, recorder, out.getvalue()


def test_default_scenario_onlines_everything_on_mainline_one_at_a_time():
    code, summary, recorder, out = run({"add_interval": 0})
    assert code == 0
    assert summary.onlined == summary.by_hotplugd == 192 and summary.bytes_onlined == 24 * GiB
    assert summary.workers == {0: 1, 1: 1}  # the default kernel is mainline: one lock, one worker
    assert "192 by hotplugd's own writes" in out and "24.0 GiB" in out
    assert all(r.result.outcome.value == "onlined" for r in recorder.reports)
    assert "seed's (anolis)" in out and "device_hotplug_lock" in out  # the computed comparison


def test_virtio_mem_does_not_stall_behind_long_deferral():
    # virtio-mem waits while 1 GiB sits offline; settle and max_defer alone would hold it for minutes
    sim = {"lock": "none", "scenario": [{"kind": "virtio-mem", "size": "4GiB", "node": 0}], "add_interval": 0}
    code, summary, recorder, _ = run(sim, settle=600, max_defer=600)
    assert code == 0 and summary.onlined == 32
    assert set(recorder.triggers()) == {"offline_bytes"}


def test_global_lock_declares_one_and_measures_about_one():
    sim = {"lock": "global", "scenario": [{"kind": "dimm", "size": "2GiB"}], "add_interval": 0}
    code, summary, recorder, _ = run(sim, defer="always", settle=0.01)
    assert code == 0 and summary.onlined == 16
    assert all(w == 1 for p in recorder.phases for w in p.workers.values())


def test_parallel_kernel_really_runs_blocks_at_once():
    # the idealised no-lock kernel: what the engine's parallel phase does when the host allows it
    sim = {"lock": "none", "nodes": 1, "cpus_per_node": 8, "cost_fixed": "2ms",
           "scenario": [{"kind": "dimm", "size": "4GiB"}], "add_interval": 0}
    code, summary, recorder, _ = run(sim, max_offline_bytes="100GiB")
    assert code == 0 and summary.onlined == 32
    assert recorder.phases[0].workers == {0: 8}
    # the calls overlapped: their summed time exceeds the phases' wall time
    phase_seconds = sum(c[1]["seconds"] for c in recorder.calls if c[0] == "hotplugd_phase_finished")
    assert sum(r.seconds for r in recorder.reports) > 2 * phase_seconds


def test_removal_during_deferral_is_not_an_error():
    sim = {"scenario": [{"kind": "dimm", "size": "1GiB"}, {"kind": "remove", "count": 3}], "add_interval": 0}
    code, summary, recorder, _ = run(sim, settle=0.2, max_offline_bytes="100GiB")
    assert code == 0
    assert summary.onlined == 5 and summary.outcomes.get("error", 0) == 0


def test_faults_are_retried_or_reported_and_deterministic():
    sim = {"fault_rate": 0.2, "fault_errnos": ["EBUSY", "EINVAL"], "seed": 7,
           "scenario": [{"kind": "dimm", "size": "8GiB"}], "add_interval": 0}
    first = run(sim, retry_backoff=0.0001)
    second = run(sim, retry_backoff=0.0001)
    code, summary, recorder, _ = first
    assert code == 1  # some EINVAL blocks stay offline, reported
    assert summary.outcomes["permanent"] > 0 and summary.onlined + summary.outcomes["permanent"] == 64
    assert first[2].outcomes() == second[2].outcomes()


def test_coldplug_blocks_present_at_start():
    sim = {"offline_at_start": "1GiB", "scenario": []}
    code, summary, _, _ = run(sim)
    assert code == 0 and summary.onlined == 16


def test_simulate_cli_prints_a_summary(capsys):
    code = main(["simulate", "--no-progress", "--set", "plugins.simulated.add_interval=0",
                 "--set", 'plugins.simulated.scenario=[{kind="dimm", size="1GiB"}]'])
    assert code == 0
    out = capsys.readouterr().out
    assert "online, proven  8 blocks of 8 (1.0 GiB)" in out


@pytest.mark.parametrize("ratio", ["0", "0.5"])
def test_simulate_cli_ratio(capsys, ratio):
    code = main(["simulate", "--no-progress", "--ratio", ratio, "--set", "plugins.simulated.add_interval=0",
                 "--set", 'plugins.simulated.scenario=[{kind="dimm", size="1GiB"}]'])
    assert code == 0
    out = capsys.readouterr().out
    # ratio 0: every kernel serial; otherwise the kernels' comparison is computed at the ratio asked for
    assert "each kernel at ratio 0" in out if ratio == "0" else "against ratio 0.5" in out
    assert "against ratio 1" not in out


def _measured(sim: dict) -> tuple[float, list[dict]]:
    from structlog.testing import capture_logs

    from hotplugd.observe.logs import configure

    configure("info")  # an earlier CLI test may have left the level at warning
    with capture_logs() as logs:
        code, summary, recorder, _ = run(sim, max_offline_bytes="100GiB", settle=0.05)
    assert code == 0
    largest = max((e for e in logs if e["event"] == "phase_finished"), key=lambda e: e["blocks"])
    return largest["effective_concurrency"], logs


def test_a_false_concurrency_claim_is_measured_and_reported():
    # a mainline kernel (global lock) whose backend claims 4 concurrent onlines
    sim = {"lock": "global", "concurrency": 4, "nodes": 1, "cpus_per_node": 4, "add_interval": 0,
           "scenario": [{"kind": "dimm", "size": "4GiB"}]}
    effective, logs = _measured(sim)
    assert effective < 2.5  # 4 workers, one lock: under the engine's threshold (1 + half the extra workers)
    assert any(e["event"] == "parallelism_not_achieved" and e["declared"] == 4 for e in logs)


def test_a_true_concurrency_claim_is_measured():
    sim = {"lock": "none", "nodes": 1, "cpus_per_node": 4, "add_interval": 0, "cost_fixed": "20ms",
           "scenario": [{"kind": "dimm", "size": "4GiB"}]}
    effective, logs = _measured(sim)
    assert effective > 2.5
    assert not any(e["event"] == "parallelism_not_achieved" for e in logs)


def test_simulate_kernel_flag_picks_the_seeds_kernel(capsys):
    code = main(["simulate", "--no-progress", "--kernel", "anolis", "--set", "plugins.simulated.add_interval=0",
                 "--set", 'plugins.simulated.scenario=[{kind="virtio-mem", size="1GiB"}]'])
    assert code == 0
    out = capsys.readouterr().out
    assert "the seed's (anolis) kernel" in out and "8 by the kernel" in out


def test_simulate_unknown_kernel_is_a_config_error(capsys):
    assert main(["simulate", "--no-progress", "--kernel", "linux-2.4"]) == 78
    assert "--kernel: expected one of mainline, per-block, anolis" in capsys.readouterr().err
