"""Scrape-time metrics and the daemon's updates, driven on the fake host with a manual clock."""

from __future__ import annotations

import errno
import os
import signal
from pathlib import Path

import anyio
import pytest
from prometheus_client.parser import text_string_to_metric_families

from hotplugd.model import Block, OnlineResult, Outcome, State
from hotplugd.observe.metrics import Metrics
from hotplugd.testing import FakeBackend, FakeHost, ManualClock, running, sample, wait_until


class DroppingBackend(FakeBackend):
    """A fake backend whose event source has dropped messages."""

    def __init__(self) -> None:
        super().__init__(FakeHost({0: 4, 1: 4}), concurrency=8)
        self.drops = {"not_kernel": 3, "oversized": 1}

    def dropped_counts(self) -> dict[str, int]:
        return dict(self.drops)


@pytest.mark.asyncio
async def test_queue_age_and_failed_blocks_are_read_at_scrape_time(make_daemon, hotplugd_metrics):
    clock = ManualClock()
    backend = DroppingBackend()
    backend.host.script(2, OnlineResult(Outcome.PERMANENT, errno=errno.EINVAL))
    daemon = make_daemon(backend, clock=clock, settle=60, max_defer=60)
    async with running(daemon):
        backend.add(1, 2, 3)
        await wait_until(lambda: sample(hotplugd_metrics, "hotplugd_pending_blocks") == 3)
        clock.advance(25)
        assert sample(hotplugd_metrics, "hotplugd_pending_oldest_age_seconds") == 25
        assert sample(hotplugd_metrics, "hotplugd_pending_bytes") == 3 * backend.host.block_size
        clock.advance(60)  # past max_defer: the phase runs
        daemon.scheduler.wake()
        await wait_until(lambda: sample(hotplugd_metrics, "hotplugd_pending_blocks") == 0
                         and not daemon.scheduler.host.in_phase)
        backend.end()
    m = hotplugd_metrics
    assert sample(m, "hotplugd_pending_oldest_age_seconds") == 0
    assert sample(m, "hotplugd_failed_blocks") == 1
    assert sample(m, "hotplugd_online_outcomes_total", {"outcome": "permanent", "errno": str(errno.EINVAL)}) == 1
    assert sample(m, "hotplugd_blocks_onlined_total", {"domain": "host", "node": "0", "zone": "Normal"}) == 2
    assert sample(m, "hotplugd_phases_total", {"trigger": "max_defer"}) == 1
    assert sample(m, "hotplugd_last_phase_blocks") == 3
    assert sample(m, "hotplugd_last_phase_bytes") == 3 * backend.host.block_size
    assert sample(m, "hotplugd_uevents_dropped_total", {"reason": "not_kernel"}) == 3
    assert sample(m, "hotplugd_uevents_dropped_total", {"reason": "oversized"}) == 1
    assert m.registry.get_sample_value("hotplugd_uevents_dropped_total", {"reason": "malformed"}) == 0


@pytest.mark.asyncio
async def test_workers_of_nodes_left_out_of_a_phase_drop_to_zero(make_daemon, hotplugd_metrics):
    backend = DroppingBackend()
    daemon = make_daemon(backend, parallel_hotplug_ratio=0.5)
    async with running(daemon):
        backend.add(1, 2, 3, 4, node=0)
        await wait_until(lambda: backend.host.online_indices() == {1, 2, 3, 4})
        assert sample(hotplugd_metrics, "hotplugd_phase_workers", {"domain": "host", "node": "0"}) == 2
        backend.add(5, node=1)
        await wait_until(lambda: 5 in backend.host.online_indices())
        backend.end()
    assert sample(hotplugd_metrics, "hotplugd_phase_workers", {"domain": "host", "node": "1"}) == 1
    assert sample(hotplugd_metrics, "hotplugd_phase_workers", {"domain": "host", "node": "0"}) == 0


@pytest.mark.asyncio
async def test_sigusr1_requests_a_rescan(make_daemon, hotplugd_metrics):
    backend = FakeBackend(FakeHost())
    daemon = make_daemon(backend)
    async with anyio.create_task_group() as tg:
        await tg.start(daemon.run)
        assert sample(hotplugd_metrics, "hotplugd_rescans_total", {"reason": "request"}) == 0
        backend.host.add(7)  # added without an event: only a rescan finds it
        await wait_until(lambda: signal.getsignal(signal.SIGUSR1) not in (signal.SIG_DFL, None),
                         what="the signal task to handle SIGUSR1")
        os.kill(os.getpid(), signal.SIGUSR1)
        await wait_until(lambda: 7 in backend.host.online_indices(), what="the rescan to online block 7")
        daemon.scheduler.stop()
    assert sample(hotplugd_metrics, "hotplugd_rescans_total", {"reason": "request"}) == 1


def test_a_failing_census_does_not_fail_the_scrape():
    metrics = Metrics()

    def broken() -> list[Block]:
        raise OSError(errno.EIO, "Input/output error", "/sys/devices/system/memory/memory9/state")

    metrics.add_census(broken)
    metrics.pending_blocks.set(4)
    assert sample(metrics, "hotplugd_memory_census_success") == 0
    assert metrics.registry.get_sample_value("hotplugd_memory_blocks", {"domain": "host", "node": "0", "zone": "none",
                                                                        "state": "offline"}) is None
    assert sample(metrics, "hotplugd_pending_blocks") == 4


def test_census_counts_blocks_and_bytes_by_node_zone_and_state():
    metrics = Metrics()
    size = 128 << 20
    blocks = [Block(0, size, 0, State.ONLINE, ("Normal",)), Block(1, size, 0, State.ONLINE, ("Normal",)),
              Block(2, size, 1, State.ONLINE, ("Movable",)), Block(3, size, 1, State.OFFLINE, ("Normal", "Movable"))]
    metrics.add_census(lambda: blocks)
    get = metrics.registry.get_sample_value
    assert get("hotplugd_memory_blocks", {"domain": "host", "node": "0", "zone": "Normal", "state": "online"}) == 2
    online_normal = {"domain": "host", "node": "0", "zone": "Normal", "state": "online"}
    assert get("hotplugd_memory_bytes", online_normal) == 2 * size
    assert get("hotplugd_memory_blocks", {"domain": "host", "node": "1", "zone": "Movable", "state": "online"}) == 1
    assert get("hotplugd_memory_blocks", {"domain": "host", "node": "1", "zone": "none", "state": "offline"}) == 1
    blocks.append(Block(4, size, 1, State.OFFLINE, ("Normal",)))  # read again at the next scrape
    assert get("hotplugd_memory_blocks", {"domain": "host", "node": "1", "zone": "none", "state": "offline"}) == 2


def test_a_backend_without_census_exports_no_census():
    metrics = Metrics()
    metrics.add_census(lambda: None)
    assert metrics.registry.get_sample_value("hotplugd_memory_census_success") is None


@pytest.mark.asyncio
async def test_the_textfile_for_node_exporter(make_daemon, tmp_path: Path):
    path = tmp_path / "textfile" / "hotplugd.prom"
    backend = FakeBackend(FakeHost())
    daemon = make_daemon(backend, config={"metrics": {"enabled": False, "textfile": str(path)}})
    async with running(daemon):
        backend.add(1, 2)
        backend.end()
    text = path.read_text()
    samples = {s.name: s.value for f in text_string_to_metric_families(text) for s in f.samples if not s.labels}
    assert samples["hotplugd_pending_blocks"] == 0
    assert sum(s.value for f in text_string_to_metric_families(text) for s in f.samples
               if s.name == "hotplugd_blocks_onlined_total") == 2
    assert [p.name for p in path.parent.iterdir()] == ["hotplugd.prom"], "written atomically: no temp file left"
