"""Crash: ``kill -9`` at random points of the work, restart, 50 times; every block ends online, in its zone.

The simulated host keeps its blocks in ``plugins.simulated.state_file`` (as a
real kernel keeps them when the daemon dies), so each restart finds what the
last one left: blocks onlined, blocks still offline, a scenario half played.
"""

from __future__ import annotations

import random
import signal
import time
from pathlib import Path

import pytest

from hotplugd_simulated.settings import parse
from hotplugd_simulated.statefile import Saved, StateFile, fingerprint

from .procs import Daemon

pytestmark = pytest.mark.reliability

RESTARTS = 50
BLOCK = 128 << 20
BOOT_BLOCKS = 2 * 32  # 4 GiB online at boot on each of the 2 nodes
PER_NODE = 2000
#: What the zone policy chooses: movable on node 0, kernel on node 1 (per-node override).
ZONES = {0: "Movable", 1: "Normal"}
SIMULATED = {
    "lock": "none",  # 4 workers per node in a phase: several onlines in flight at every kill
    "cost_fixed": "20ms",  # about 10 s of onlining in all, spread over the 50 lives
    "add_interval": "200us",
    "scenario": [{"kind": "dimm", "size": f"{PER_NODE * BLOCK >> 30}GiB", "node": 0},
                 {"kind": "dimm", "size": f"{PER_NODE * BLOCK >> 30}GiB", "node": 1}],
}


def toml(value: object) -> str:
    if isinstance(value, str):
        return f'"{value}"'
    if isinstance(value, list):
        return "[" + ", ".join(toml(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k} = {toml(v)}" for k, v in value.items()) + "}"
    return str(value)


def daemon_args(state_file: Path) -> list[str]:
    table = {**SIMULATED, "state_file": str(state_file)}
    sets = {"metrics.enabled": "false", "log_level": '"warning"', "zones.policy": '"movable"',
            "zones.nodes.1.policy": '"kernel"', **{f"plugins.simulated.{k}": toml(v) for k, v in table.items()}}
    args = ["--backend", "simulated"]
    for key, value in sets.items():
        args += ["--set", f"{key}={value}"]
    return args


def read_state(path: Path) -> Saved:
    """The host as the journal has it (a reader may see a torn last line: the loader skips it)."""
    s = parse({k: v for k, v in SIMULATED.items()})
    key = fingerprint(s.nodes, s.block_size, s.boot_memory, s.offline_at_start, s.scenario)
    saved = StateFile(path, key, s.block_size).load()
    assert saved is not None, f"no state file at {path}"
    return saved


def finished(saved: Saved) -> bool:
    """Both scenario steps played and every block online."""
    return saved.done == {0, 1} and all(b.zone for b in saved.blocks.values())


def test_kill_9_at_random_points_then_restart_fifty_times(tmp_path: Path) -> None:
    rng = random.Random(20240607)
    state = tmp_path / "host.state"
    interrupted = 0
    progress = []
    for life in range(RESTARTS):
        daemon = Daemon(daemon_args(state), tmp_path).start()
        daemon.wait_ready()
        time.sleep(rng.uniform(0.0, 0.3))  # a random point of whatever phase is running
        ended = daemon.kill()
        assert ended.returncode == -signal.SIGKILL, f"life {life} ended by itself:\n{ended.stderr}"
        saved = read_state(state)
        interrupted += not finished(saved)
        progress.append(sum(1 for b in saved.blocks.values() if b.zone))

    print(f"{interrupted} of {RESTARTS} kills interrupted work; blocks online after each: {progress}")
    # The kills fell in the middle of the work, and the work went on from one life to the next.
    assert interrupted >= RESTARTS * 4 // 5, f"only {interrupted} kills interrupted work"
    assert progress == sorted(progress) and progress[0] < progress[-1]

    last = Daemon(daemon_args(state), tmp_path).start()
    last.wait_ready()
    deadline = time.monotonic() + 120
    while not finished(read_state(state)):
        assert time.monotonic() < deadline, "the last life did not online every block"
        time.sleep(0.05)
    last.signal(signal.SIGTERM)
    ended = last.wait()
    assert ended.returncode == 0, ended.stderr
    assert "Traceback" not in ended.stderr

    saved = read_state(state)
    # No step replayed after a restart: exactly the blocks the scenario adds, each once.
    assert saved.next_index == len(saved.blocks) == BOOT_BLOCKS + 2 * PER_NODE
    hot_added = [b for b in saved.blocks.values() if b.index >= BOOT_BLOCKS]
    assert sum(1 for b in hot_added if b.node == 0) == sum(1 for b in hot_added if b.node == 1) == PER_NODE
    wrong = [(b.index, b.node, b.zone) for b in hot_added if b.zone != ZONES[b.node]]
    assert not wrong, f"{len(wrong)} blocks outside the zone the policy chose, e.g. {wrong[:5]}"
    assert all(b.zone == "Normal" for b in saved.blocks.values() if b.index < BOOT_BLOCKS)
