"""One info line per hot-add once all of it is online: blocks, bytes, time, who onlined, and the proof."""

from __future__ import annotations

import errno
import functools

import anyio
import pytest
from structlog.testing import capture_logs
from test_daemon_e2e import make

from hotplugd_sysfs.testing.fakesysfs import FakeSysfs

pytestmark = pytest.mark.asyncio


async def hot_add(fake: FakeSysfs, daemon, provider, indices, *, node: int = 0, finish=None, **kwargs) -> list[dict]:
    """Play one hot-add through the daemon until idle; the ``hotadd_settled`` lines it logged."""
    with capture_logs() as logs:
        async with anyio.create_task_group() as tg:
            with anyio.fail_after(10):
                await tg.start(functools.partial(daemon.run, until_idle=True))
                for data in fake.hot_add(indices, node=node, **kwargs):
                    provider.backend.feed(data)
                if finish is not None:
                    await finish(logs)
                provider.backend.end()
    return [e for e in logs if e["event"] == "hotadd_settled"]


async def test_the_kernel_onlines_a_hot_add_and_one_line_says_so(fake_sysfs, hook_recorder):
    fake_sysfs.add_blocks(range(0, 8), state="online", zones=("Normal",))
    daemon, provider = make(fake_sysfs, hook_recorder, scheduler={"onliner": "auto"})
    (line,) = await hot_add(fake_sysfs, daemon, provider, range(16, 24))
    assert line["summary"].startswith("8 blocks, 1.0 GiB online in ")
    assert line["summary"].endswith(" s, by the kernel, all proven")
    assert (line["blocks"], line["online"], line["failed"], line["by_hotplugd"]) == (8, 8, 0, 0)
    assert line["domain"] == "host" and line["bytes"] == 8 << 27


async def test_where_hotplugd_onlines_the_line_says_hotplugd(fake_sysfs, hook_recorder):
    zones = {"policy": "kernel", "nodes": {"1": {"policy": "movable"}}}  # not the kernel's to carry
    daemon, provider = make(fake_sysfs, hook_recorder, zones=zones, scheduler={"onliner": "auto"})
    (line,) = await hot_add(fake_sysfs, daemon, provider, range(16, 20))
    assert line["summary"].startswith("4 blocks, 512.0 MiB online in ")
    assert line["summary"].endswith(", by hotplugd, all proven")


async def test_a_block_the_kernel_left_offline_is_counted_as_hotplugds(fake_sysfs, hook_recorder):
    daemon, provider = make(fake_sysfs, hook_recorder, scheduler={"onliner": "auto", "kernel_grace": 0.05})
    (line,) = await hot_add(fake_sysfs, daemon, provider, range(8, 12), left_offline=[9])
    assert line["summary"].endswith(", by the kernel (3) and hotplugd (1), all proven")


async def test_blocks_held_half_online_hold_the_line_back_until_the_kernels_phase_ends(fake_sysfs, hook_recorder):
    fake_sysfs.set_param("parallel_hotplug_ratio", "0")
    fake_sysfs.add_blocks(range(0, 2), state="online", zones=("Normal",))
    daemon, provider = make(fake_sysfs, hook_recorder, scheduler={"onliner": "auto", "parallel_hotplug_ratio": 0.5})

    async def kernel_phase(logs):
        await anyio.sleep(0.3)
        assert not [e for e in logs if e["event"] == "hotadd_settled"]  # half-online: not all online yet
        fake_sysfs.finish_deferred()

    (line,) = await hot_add(fake_sysfs, daemon, provider, range(16, 20), finish=kernel_phase)
    assert line["summary"].endswith(", by the kernel, all proven") and line["online"] == 4


async def test_a_hot_add_that_all_failed_says_so(fake_sysfs, hook_recorder):
    zones = {"policy": "kernel", "nodes": {"1": {"policy": "movable"}}}
    daemon, provider = make(fake_sysfs, hook_recorder, zones=zones,
                            scheduler={"onliner": "auto", "retries": 0, "retry_failed_after": 0})
    for index in (16, 17):
        fake_sysfs.fail(index, errno.EINVAL)
    (line,) = await hot_add(fake_sysfs, daemon, provider, range(16, 18))
    assert line["summary"].startswith("no block online after ") and line["summary"].endswith(": 2 failed, 0 gone")
    assert (line["online"], line["failed"]) == (0, 2)
