"""On the fake sysfs tree's kernel: a block hotplugd's write finds online (EINVAL, read back online) is the kernel's."""

from __future__ import annotations

import functools

import anyio
import pytest
from test_daemon_e2e import make

from hotplugd.testing import sample

pytestmark = pytest.mark.asyncio


async def test_a_block_the_kernel_onlined_before_hotplugds_write_is_counted_as_the_kernels(fake_sysfs, hook_recorder):
    daemon, provider = make(fake_sysfs, hook_recorder, scheduler={"onliner": "auto", "kernel_grace": 0.05,
                                                              "kernel_grace_max": 0.1})
    async with anyio.create_task_group() as tg:
        with anyio.fail_after(10):
            await tg.start(functools.partial(daemon.run, until_idle=True))
            events = fake_sysfs.hot_add(range(16, 20))  # the kernel onlines all four
            for data in events[:4]:  # ... but its online uevents are lost: hotplugd writes at the bound
                provider.backend.feed(data)
            provider.backend.end()
    assert sorted(index for index, _ in fake_sysfs.writes) == [16, 17, 18, 19]  # each write: EINVAL
    assert fake_sysfs.online_indices() >= {16, 17, 18, 19}
    labels = {"domain": "host", "node": "0", "zone": "Normal"}
    assert sample(daemon.metrics, "hotplugd_kernel_onlined_blocks_total", labels) == 4
    assert sample(daemon.metrics, "hotplugd_blocks_onlined_total", labels) == 0
    assert sample(daemon.metrics, "hotplugd_online_outcomes_total", {"outcome": "already_online", "errno": "22"}) == 4
    assert {r.block.index: (r.result.outcome.value, r.attempts) for r in hook_recorder.reports} == {
        i: ("onlined", 0) for i in range(16, 20)}
    assert daemon.scheduler.onlined == 0
