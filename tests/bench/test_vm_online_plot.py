"""bench/vm_online.py's plot, from a made-up saved run (no guest): one panel per workload, one line
per onliner (its median repetition), blocks placed on the host's clock; older runs draw nothing."""

from __future__ import annotations

import importlib.util
import io
import json
import sys
from pathlib import Path

import pytest
from rich.console import Console

ROOT = Path(__file__).resolve().parents[2]
BLOCK = 128 << 20


@pytest.fixture(scope="module")
def vm_online():
    spec = importlib.util.spec_from_file_location("vm_online", ROOT / "bench" / "vm_online.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("vm_online", module)
    spec.loader.exec_module(module)
    return module


def probe(blocks: int, first: float, step: float, *, per_block: bool = True) -> dict:
    """What guest_probe.py online-wait answers: guest wall-clock times, the blocks in online order."""
    online = [1000.0 + first + i * step for i in range(blocks)]
    p = {"ok": True, "count": blocks, "online": blocks, "added": blocks, "first_add": 1000.0 + first - 0.01,
         "last_add": 1000.0 + first, "first_online": online[0], "last_online": online[-1], "end": online[-1] + 0.02}
    if per_block:
        p["online_at"] = [[200 + i, t] for i, t in enumerate(online)]
    return p


def saved_run(vm_online, *, per_block: bool = True, new_format: bool = True) -> dict:
    """Three onliners, three repetitions each; repetition r of onliner k is slower with r (the median is r=1)."""
    steps = {"kernel": 0.005, "c": 0.006, "udev": 0.012}
    results = {}
    for key, step in steps.items():
        results[key] = {}
        for w in vm_online.WORKLOADS:
            blocks = w.size // BLOCK
            runs = []
            for r in (2, 0, 1):  # saved out of order: the plot picks the median by time, not by position
                p = probe(blocks, 0.5 + r * 0.1, step, per_block=per_block)
                seconds = (p["end"] - 1000.0) + 0.05  # the host's stop comes a little after the guest's answer
                runs.append({"seconds": seconds, "probe": p})
            results[key][w.label] = runs
    if not new_format:  # as saved before the plot: the timings alone
        return results
    names = {"kernel": "kernel auto-online", "c": "C loop", "udev": "udev rule"}
    return {"meta": {"date": "2026-12-01 23:30 UTC", "commit": "abc1234", "cpus": 2, "reps": 3},
            "names": names, "results": results}


def test_one_line_per_onliner_in_each_workload(vm_online, tmp_path):
    path = tmp_path / "run.json"
    path.write_text(json.dumps(saved_run(vm_online)))
    names, results, meta = vm_online.load(path)
    png = tmp_path / "plot.png"

    fig = vm_online.plot(results, names, png, vm_online.caption(meta))

    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert [ax.get_title() for ax in fig.axes] == [w.label for w in vm_online.WORKLOADS]
    for ax, w in zip(fig.axes, vm_online.WORKLOADS, strict=True):
        lines = ax.get_lines()
        assert [line.get_label() for line in lines] == ["kernel auto-online", "C loop", "udev rule"]
        for line in lines:
            xs, ys = list(line.get_xdata()), list(line.get_ydata())
            assert ys == list(range(w.size // BLOCK + 1))  # from none to every block, one step each
            assert xs == sorted(xs) and xs[0] == 0.0


def test_blocks_are_placed_on_the_hosts_clock_from_the_median_repetition(vm_online, tmp_path):
    path = tmp_path / "run.json"
    path.write_text(json.dumps(saved_run(vm_online)))
    names, results, _ = vm_online.load(path)
    fig = vm_online.plot(results, names, tmp_path / "plot.png")

    udev = fig.axes[0].get_lines()[2]
    median = sorted(results["udev"]["dimm 4 GiB"], key=lambda t: t.seconds)[1]
    # The guest's answer sits at the host's stop, ``seconds`` after the hot-add.
    expected = [median.seconds - (median.probe["end"] - t) for _, t in median.probe["online_at"]]
    assert list(udev.get_xdata())[1:] == pytest.approx(expected)
    assert expected[-1] < median.seconds


def test_runs_without_per_block_times_draw_nothing(vm_online, tmp_path):
    path = tmp_path / "old.json"
    path.write_text(json.dumps(saved_run(vm_online, per_block=False, new_format=False)))
    png = tmp_path / "plot.png"
    names, results, meta = vm_online.load(path)
    assert names == {"kernel": "kernel", "c": "c", "udev": "udev"} and meta == {}

    assert vm_online.plot(results, names, png) is None
    assert vm_online.from_json(Console(file=io.StringIO()), path, png) == 0
    assert not png.exists()


def test_from_json_redraws_the_plot(vm_online, tmp_path):
    path = tmp_path / "run.json"
    path.write_text(json.dumps(saved_run(vm_online)))
    png = tmp_path / "again.png"

    assert vm_online.main(["--from-json", str(path), "--plot", str(png)]) == 0
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
