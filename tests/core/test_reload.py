"""SIGHUP's reload, in process: new bounds apply to blocks already queued; a bad file changes nothing."""

from __future__ import annotations

from pathlib import Path

import pytest

from hotplugd.config import load
from hotplugd.testing import FakeBackend, FakeHost, ManualClock, running, sample, wait_until

pytestmark = pytest.mark.asyncio

BASE = 'backend = "test"\n[metrics]\nenabled = false\n'


async def test_reload_applies_to_queued_blocks_and_refuses_a_bad_file(tmp_path: Path, make_daemon, hotplugd_metrics):
    path = tmp_path / "hotplugd.toml"
    path.write_text(BASE + "[scheduler]\nsettle = 600\nmax_defer = 600\nmax_pending_blocks = 100\n")
    path.chmod(0o644)
    clock = ManualClock()
    backend = FakeBackend(FakeHost({0: 4}), concurrency=4)
    daemon = make_daemon(backend, load(path), clock=clock)
    async with running(daemon):
        backend.add(1, 2)
        await wait_until(lambda: len(daemon.scheduler.host.queue) == 2)

        path.write_text(BASE + "[scheduler]\nsettle = 'soon'\n")
        assert not await daemon.reload()
        assert daemon.config.scheduler.settle == 600 and len(daemon.scheduler.host.queue) == 2

        path.write_text(BASE + "[scheduler]\nsettle = 0.1\nmax_defer = 600\nmax_pending_blocks = 50\n")
        assert await daemon.reload()
        assert daemon.scheduler.host.queue.limit == 50
        clock.advance(1)  # past the new settle: the blocks queued before the reload go online
        daemon.scheduler.wake()
        await wait_until(lambda: backend.host.online_indices() == {1, 2})
        backend.end()
    assert sample(hotplugd_metrics, "hotplugd_config_reloads_total", {"result": "refused"}) == 1
    assert sample(hotplugd_metrics, "hotplugd_config_reloads_total", {"result": "applied"}) == 1
