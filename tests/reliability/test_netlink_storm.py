"""The sysfs backend's real uevent socket, flooded until the kernel drops (ENOBUFS), and forged senders.

The daemon runs the ``sysfs`` plugin on a fake tree (its ``state`` writes play
the kernel) but reads a real ``NETLINK_KOBJECT_UEVENT`` socket with a small
receive buffer, made in a private network namespace (see :mod:`.netns`): the
flood reaches that socket only, and nothing is written under this machine's
``/sys``. Blocks are added to the tree without their events, as if the kernel
had dropped them; only the overflow's rescan can find them.
"""

from __future__ import annotations

from collections.abc import Iterator

import anyio
import pytest

import hotplugd_sysfs.backend
from hotplugd.daemon import Daemon
from hotplugd.testing import HookRecorder, sample, wait_until
from hotplugd_sysfs.testing.fakesysfs import FakeSysfs

from .sysfs_tree import FakeTreeSysfs, daemon_on

pytestmark = [pytest.mark.reliability, pytest.mark.asyncio]

HOT_ADDED = range(64, 192)  # 16 GiB of 128 MiB blocks


@pytest.fixture
def tree(fake_sysfs: FakeSysfs, monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeTreeSysfs]:
    fake_sysfs.add_blocks(range(0, 64), state="online", zones=("Normal",))  # boot memory
    provider = FakeTreeSysfs(fake_sysfs)
    monkeypatch.setattr(hotplugd_sysfs.backend, "open_uevent_socket", provider.open_socket)
    yield provider
    if provider.forger is not None:
        provider.forger.close()


def dropped(daemon: Daemon, reason: str) -> int:
    return daemon.backend.dropped_counts().get(reason, 0)


async def test_a_flood_past_the_receive_buffer_ends_in_a_rescan_that_onlines_everything(tree, fake_sysfs):
    recorder = HookRecorder()
    daemon = daemon_on(tree, recorder)
    async with anyio.create_task_group() as tg:
        with anyio.fail_after(60):
            await tg.start(daemon.run)
            assert tree.forger is not None
            fake_sysfs.add_blocks(HOT_ADDED)  # hot-added; their own uevents were lost
            flood = [fake_sysfs.uevent("add", i) for i in HOT_ADDED]
            for _ in range(20):  # far more than 64 KiB of datagrams, sent while the daemon cannot read
                for data in flood:
                    tree.forger.broadcast(data)
            await wait_until(lambda: fake_sysfs.online_indices() == set(range(0, 192)), timeout=50,
                             what="every hot-added block online")
            daemon.scheduler.stop()
    m = daemon.metrics
    assert sample(m, "hotplugd_rescans_total", {"reason": "overflow"}) >= 1
    # what was read of the flood came from a userspace port: dropped, never acted on
    assert dropped(daemon, "not_kernel") > 0
    assert sample(m, "hotplugd_uevents_received_total", {"action": "add"}) == 0
    assert sorted(r.block.index for r in recorder.reports) == list(HOT_ADDED)  # each block onlined once


async def test_a_forged_add_is_ignored(tree, fake_sysfs):
    recorder = HookRecorder()
    daemon = daemon_on(tree, recorder)
    async with anyio.create_task_group() as tg:
        with anyio.fail_after(30):
            await tg.start(daemon.run)
            assert tree.forger is not None
            fake_sysfs.add_block(64)  # offline, and no kernel event for it
            tree.forger.broadcast(fake_sysfs.uevent("add", 64))
            await wait_until(lambda: dropped(daemon, "not_kernel") == 1, what="the forged event")
            daemon.scheduler.stop()
    assert fake_sysfs.state(64) == "offline" and fake_sysfs.writes == []
    assert recorder.reports == [] and len(daemon.scheduler.host.queue) == 0
    assert sample(daemon.metrics, "hotplugd_rescans_total", {"reason": "overflow"}) == 0
