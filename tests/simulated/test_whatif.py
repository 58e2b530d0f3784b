"""``hotplugd simulate --from-host``: a fake host's shape read from its sysfs, each kernel's time predicted."""

from __future__ import annotations

import pytest

from hotplugd import parse_cpulist as count_cpus
from hotplugd.commands.cli import main
from hotplugd_simulated.whatif import read_shape
from hotplugd_sysfs.testing.fakesysfs import FakeSysfs


def snapshot(fake: FakeSysfs) -> dict[str, bytes]:
    return {str(p): p.read_bytes() for p in sorted(fake.sys.rglob("*")) if p.is_file() and not p.is_symlink()}


@pytest.fixture
def fake(tmp_path) -> FakeSysfs:
    fake = FakeSysfs(tmp_path, block_size=1 << 30, nodes={0: "0-15", 1: "16-31", 2: ""})  # node 2: CXL, no CPUs
    fake.add_blocks(range(0, 48), node=0, state="online", zones=("Normal",))
    return fake


def test_the_shape_is_read_from_sysfs(fake):
    shape = read_shape(fake.sys)
    assert shape.cpus == (16, 16, 0) and shape.block_size == 1 << 30 and shape.memory == 48 << 30
    assert count_cpus("0-3,8-11\n") == 8 and count_cpus("\n") == 0


def test_whatif_predicts_each_kernel_and_never_writes(fake, capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "160")
    before = snapshot(fake)
    assert main(["simulate", "--from-host", str(fake.sys), "--size", "96GiB"]) == 0
    out = capsys.readouterr().out
    assert "3 nodes" in out and "96.0 GiB" in out
    for label in ("mainline", "per-block parallel", "seed's (anolis)", "seed's, 1 GiB bound"):
        assert label in out
    assert "1 (100 %)" in out and "16" in out  # the seed's kernel at the host's CPU count
    assert snapshot(fake) == before and fake.writes == []


def test_the_seeds_kernel_at_full_ratio_beats_serial_on_this_host(fake):
    from hotplugd.plugin.manager import backend_registry, make_manager

    shape = read_shape(fake.sys)
    backend = backend_registry(make_manager()).build("simulated", {
        "nodes": 3, "cpus_per_node": 16, "block_size": shape.block_size, "boot_memory": "16GiB", "scenario": []})
    by = {(p.kernel, p.ratio, p.bound): p for p in backend.whatif(96 << 30, shape.cpus, (0.0, 1.0))}
    serial = by["mainline", 0.0, False].seconds
    assert by["mainline", 1.0, False].seconds == serial
    # node 2 has no CPU: its third of the hot-add gets one worker and bounds the phase
    with_cpus = {(p.kernel, p.ratio, p.bound): p for p in backend.whatif(96 << 30, (16, 16, 16), (0.0, 1.0))}
    assert with_cpus["anolis", 1.0, False].seconds < serial / 3 < by["anolis", 1.0, False].seconds < serial


def test_a_tree_that_is_not_sysfs_is_a_clear_error(tmp_path, capsys):
    assert main(["simulate", "--from-host", str(tmp_path)]) == 78
    assert "--from-host" in capsys.readouterr().err


def table_rows(out: str) -> list[list[str]]:
    """The predictions table's rows (first line of each), cells stripped."""
    return [[c.strip() for c in line.strip("│").split("│")] for line in out.splitlines()
            if line.startswith("│") and line.split("│")[1].strip()]


def test_each_row_says_why_and_a_cpu_less_node_gets_no_workers(fake, capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "250")
    assert main(["simulate", "--from-host", str(fake.sys), "--size", "96GiB"]) == 0
    rows = table_rows(capsys.readouterr().out)
    assert len(rows) == 16 and all(row[-1] for row in rows)  # every row has its reason
    anolis_full = next(r for r in rows if r[0] == "seed's (anolis)" and r[1] == "1 (100 %)")
    assert anolis_full[2] == "16, 16, 0"  # node 2 has no CPU: no worker of its own
    assert "node 2 has no CPU" in anolis_full[-1]


def test_ties_go_to_the_lowest_ratio_and_nothing_gained_is_ratio_0(fake, capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "250")
    assert main(["simulate", "--from-host", str(fake.sys), "--size", "96GiB"]) == 0
    advice = {line.split(":")[0]: line for line in capsys.readouterr().out.splitlines() if "boot with" in line}
    assert "boot with ratio 0: deferring gains nothing here" in advice["mainline"]
    # node 2 walks its third alone whatever the ratio: every ratio ties, the lowest wins
    assert "boot with ratio 0.25 " in advice["seed's (anolis)"]


def test_plurals_on_a_one_node_one_cpu_host(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "250")
    fake = FakeSysfs(tmp_path, block_size=128 << 20, nodes={0: "0"})
    fake.add_blocks(range(8), node=0, state="online", zones=("Normal",))
    assert main(["simulate", "--from-host", str(fake.sys), "--size", "4GiB"]) == 0
    out = capsys.readouterr().out
    assert "this host: 1 node (" in out and "over its 1 node" in out and "1 nodes" not in out
    assert "on 1 worker a node" in out and "1 workers" not in out


@pytest.mark.parametrize(("size", "message"), [
    ("12345", "--size: 12345 is less than one 1.0 GiB block on each of the host's 3 nodes"),  # ZeroDivisionError
    ("0", "--size: 0 is less than one"),  # silently meant the host's memory
    ("abc", "--size: expected a size"),
    (str(1 << 56), "--size: 72057594037927936 is 67108864 blocks"),  # took 1 GB
    (str(1 << 62), "the what-if computes at most 1048576"),  # MemoryError
])
def test_sizes_are_bounded_before_any_work(fake, capsys, size, message):
    assert main(["simulate", "--from-host", str(fake.sys), "--size", size]) == 78
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
