"""bench/seed_table.py's shape, on smaller hot-adds: the seed's result, from the simulated kernels."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench" / "seed_table.py"
MiB, GiB = 1 << 20, 1 << 30


def load():
    spec = importlib.util.spec_from_file_location("seed_table", BENCH)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def test_the_table_has_the_seeds_shape():
    seed = load()
    cells = {(c.label, c.prediction.block_size): c for c in seed.table(totals=(16 * GiB,))}
    assert cells["per-block parallel", 128 * MiB].speedup < 1.0
    assert 2.5 <= cells["per-block parallel", GiB].speedup <= 3.5
    for size in (128 * MiB, GiB):
        assert cells["deferred parallel", size].speedup >= 3.0
        assert cells["mainline, ratio 1", size].speedup == cells["serial", size].speedup == 1.0
        # deferring holds the whole hot-add offline; the bound keeps it to 1 GiB a device
        assert cells["deferred parallel", size].prediction.peak_offline == 16 * GiB
        assert cells["deferred, 1 GiB bound", size].prediction.peak_offline == 2 * GiB
    # the bound costs deferral its gain where a phase holds one block
    assert cells["deferred, 1 GiB bound", GiB].speedup < cells["deferred, 1 GiB bound", 128 * MiB].speedup


def test_json_has_one_record_per_cell(tmp_path):
    pytest.importorskip("matplotlib")  # the --plot (the test extra has it; Debian's package does not depend on it)
    seed = load()
    out = tmp_path / "seed.json"
    assert seed.main(["--json", str(out), "--plot", str(tmp_path / "seed.png")]) == 0
    records = json.loads(out.read_text())
    assert len(records) == 4 * len(seed.ROWS)
    assert {"kernel", "block_size", "total", "seconds", "speedup"} <= set(records[0])
    assert (tmp_path / "seed.png").stat().st_size > 0
