"""Storm: 100,000 add events as fast as the simulated backend raises them, in a child process.

The pending queue's bound is set below what a phase takes to drain, so the
storm overflows it again and again: refused adds are counted, each overflow
ends in a full rescan, and the rescan finds the refused blocks. The child's
peak RSS (``wait4``) bounds what the storm costs in memory.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from .metrics_file import Samples
from .procs import Daemon

pytestmark = pytest.mark.reliability

BLOCKS = 100_000
BOOT_PER_NODE = 32  # the simulated host's 4 GiB of boot memory per node
QUEUE_BOUND = 10_000
#: Behaviour bound, not a measurement: the storm measured about 90 MB here.
MAX_RSS = 150 << 20
HALF = f"{BLOCKS // 2 * 128 >> 10}GiB"  # 50,000 blocks of 128 MiB


def storm_args(textfile: Path) -> list[str]:
    sets = {
        "log_format": '"json"', "metrics.enabled": "false", "metrics.textfile": f'"{textfile}"',
        "scheduler.max_pending_blocks": str(QUEUE_BOUND),
        "scheduler.onliner": '"hotplugd"',  # hotplugd's own queue under the storm (the kernel would online them)
        "plugins.simulated.add_interval": "0",  # as fast as the backend can raise them
        "plugins.simulated.cost_fixed": '"100us"', "plugins.simulated.cost_init_per_page": "0",
        "plugins.simulated.cost_free_per_page": "0",
        "plugins.simulated.scenario": f'[{{kind="dimm", size="{HALF}", node=0}}, '
                                      f'{{kind="dimm", size="{HALF}", node=1}}]',
    }
    args = ["--no-progress", "--log-level", "info"]
    for key, value in sets.items():
        args += ["--set", f"{key}={value}"]
    return args


def logged(stderr: str, event: str) -> list[dict]:
    records = [json.loads(line) for line in stderr.splitlines() if line.startswith("{")]
    return [r for r in records if r.get("event") == event]


def test_hundred_thousand_adds_all_online_rescans_counted_memory_bounded(tmp_path: Path) -> None:
    textfile = tmp_path / "storm.prom"
    ended = Daemon(storm_args(textfile), tmp_path, "storm").start("simulate").wait(timeout=600)
    assert ended.returncode == 0, ended.stderr[-3000:]

    m = Samples.read(textfile)
    assert m.value("hotplugd_uevents_received_total", action="add") == BLOCKS
    # every block the host has is online: the census is read from the host, not from our own counts
    for node in ("0", "1"):
        assert m.total("hotplugd_memory_blocks", node=node, state="online") == BLOCKS // 2 + BOOT_PER_NODE
    assert m.total("hotplugd_memory_blocks", state="offline") == 0
    assert m.value("hotplugd_blocks_onlined_total", node="0", zone="Normal") + \
        m.value("hotplugd_blocks_onlined_total", node="1", zone="Normal") == BLOCKS

    # the queue overflowed, and every overflow was followed by a rescan that was counted
    refused = m.value("hotplugd_queue_full_total")
    rescans = m.value("hotplugd_rescans_total", reason="queue_full")
    assert refused > 0 and rescans > 0
    assert rescans == len([r for r in logged(ended.stderr, "rescan") if r["reason"] == "queue_full"])
    assert all(p["blocks"] <= QUEUE_BOUND for p in logged(ended.stderr, "phase_finished"))

    print(f"{BLOCKS} adds: {refused:.0f} refused by the full queue, {rescans:.0f} rescans, "
          f"peak RSS {ended.max_rss / 2**20:.0f} MiB")
    assert ended.max_rss < MAX_RSS, f"peak RSS {ended.max_rss >> 20} MiB"
