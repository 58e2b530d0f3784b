"""The real Daemon on a fake sysfs tree: coldplug, hot-add, retries, kernel auto-online, readiness.

The ``sysfs`` backend is built from its ``[plugins.sysfs]`` table exactly as
the entry point builds it; only its file seam is the fake tree's kernel.
"""

from __future__ import annotations

import errno
import functools
from collections.abc import Mapping
from typing import Any

import anyio
import pytest

from hotplugd import hookimpl
from hotplugd.config import from_mapping
from hotplugd.daemon import Daemon
from hotplugd.observe.metrics import Metrics
from hotplugd.observe.notify import Notifier
from hotplugd.plugin.manager import backend_registry, make_manager
from hotplugd_sysfs import SysfsBackend
from hotplugd_sysfs import hotplugd_check_config as check_sysfs_table
from hotplugd_sysfs.netlink import NetlinkSource
from hotplugd_sysfs.testing.fakesysfs import FakeSysfs

pytestmark = pytest.mark.asyncio


class FakeKernelSysfs:
    """Registers ``sysfs`` like the real plugin, but over the fake tree's kernel."""

    def __init__(self, fake: FakeSysfs) -> None:
        self.fake = fake
        self.backend: SysfsBackend | None = None

    @hookimpl
    def hotplugd_register_backends(self, registry: Any) -> None:
        registry.add("sysfs", self.build)

    @hookimpl
    def hotplugd_check_config(self, plugins: Mapping[str, Mapping[str, Any]]) -> list:
        return check_sysfs_table(plugins)

    def build(self, options: Mapping[str, Any]) -> SysfsBackend:
        self.backend = SysfsBackend.from_options(options, io=self.fake.io)
        return self.backend


class ReadyProbe(Notifier):
    """Records what was true at the moment the daemon said READY=1."""

    def __init__(self) -> None:
        super().__init__({})
        self.daemon: Daemon | None = None
        self.at_ready: dict[str, Any] = {}

    def ready(self, status: str = "") -> bool:
        if self.daemon is not None and not self.at_ready:
            backend = self.daemon.backend
            self.at_ready = {"queued": len(self.daemon.scheduler.host.queue),
                             "netlink_bound": isinstance(backend._source, NetlinkSource)
                             and backend._source.sock.getsockname()[1] == 1}
        return super().ready(status)


def make(fake: FakeSysfs, recorder: Any = None, notifier: Notifier | None = None, *,
         sysfs: Mapping[str, Any] | None = None, **config: Any) -> tuple[Daemon, FakeKernelSysfs]:
    provider = FakeKernelSysfs(fake)
    # hotplugd's own onlining unless a test asks for the plan (the kernel's auto-online where it can)
    data = {"backend": "sysfs", "metrics": {"enabled": False}, "disabled_plugins": ["sysfs"],
            "state_directory": str(fake.base / "state"),
            "plugins": {"sysfs": fake.options(**(sysfs or {}))}, **config}
    data["scheduler"] = {"onliner": "hotplugd", **config.get("scheduler", {})}
    extra = [("fake-kernel-sysfs", provider)] + ([("recorder", recorder)] if recorder else [])
    pm = make_manager(["sysfs"], load_entry_points=True, extra=extra, environ={})
    daemon = Daemon(from_mapping(data), pm, metrics=Metrics(), notifier=notifier or Notifier({}),
                    serve_metrics=False)
    return daemon, provider


async def test_coldplug_hot_add_and_a_retry_online_everything(fake_sysfs, hook_recorder):
    fake_sysfs.add_node(1, "4-7")
    fake_sysfs.add_blocks(range(0, 8), state="online", zones=("Normal",))  # boot memory
    fake_sysfs.add_blocks(range(8, 12), node=1)  # offline at start: coldplug
    fake_sysfs.fail(20, errno.EBUSY)
    daemon, provider = make(fake_sysfs, hook_recorder, zones={"policy": "movable"},
                            scheduler={"retry_backoff": 0.0})
    async with anyio.create_task_group() as tg:
        with anyio.fail_after(10):
            await tg.start(functools.partial(daemon.run, until_idle=True))
            for data in fake_sysfs.hot_add(range(16, 24), node=0):
                provider.backend.feed(data)
            provider.backend.end()
    assert fake_sysfs.online_indices() == {*range(0, 12), *range(16, 24)}
    assert all(fake_sysfs.valid_zones(i) == ("Movable",) for i in [*range(8, 12), *range(16, 24)])
    written = [index for index, _ in fake_sysfs.writes]
    assert sorted(written) == sorted([*range(8, 12), *range(16, 24), 20])  # 20 twice: EBUSY, then onlined
    assert {value for _, value in fake_sysfs.writes} == {"online_movable"}
    outcomes = hook_recorder.outcomes()
    assert outcomes == {i: "onlined" for i in [*range(8, 12), *range(16, 24)]}
    assert [r.attempts for r in hook_recorder.reports if r.block.index == 20] == [2]


async def test_lost_events_are_recovered_by_a_rescan(fake_sysfs, hook_recorder):
    daemon, provider = make(fake_sysfs, hook_recorder)
    async with anyio.create_task_group() as tg:
        with anyio.fail_after(10):
            await tg.start(functools.partial(daemon.run, until_idle=True))
            fake_sysfs.hot_add(range(30, 34))  # their uevents never arrive: the kernel dropped them
            provider.backend.feed(fake_sysfs.uevent("add", 34))  # ... and this one's block is not there yet
            provider.backend.overflow()  # ENOBUFS
            provider.backend.end()
    assert fake_sysfs.online_indices() == set(range(30, 34))
    assert hook_recorder.outcomes() == {i: "onlined" for i in range(30, 34)}


async def test_a_block_another_onliner_took_counts_as_success(fake_sysfs, hook_recorder):
    fake_sysfs.add_blocks(range(4, 6))
    fake_sysfs.before_write.append(
        lambda index, _value: fake_sysfs.set_state(index, "online", ("Normal",)) if index == 5 else None)
    daemon, provider = make(fake_sysfs, hook_recorder)
    async with anyio.create_task_group() as tg:
        await tg.start(functools.partial(daemon.run, until_idle=True))
        provider.backend.end()
    assert hook_recorder.outcomes() == {4: "onlined", 5: "already_online"}


async def test_permanent_errors_leave_the_block_offline(fake_sysfs, hook_recorder):
    fake_sysfs.add_blocks(range(4, 6))
    fake_sysfs.fail(4, errno.EINVAL)
    daemon, provider = make(fake_sysfs, hook_recorder)
    async with anyio.create_task_group() as tg:
        await tg.start(functools.partial(daemon.run, until_idle=True))
        provider.backend.end()
    assert hook_recorder.outcomes() == {4: "permanent", 5: "onlined"}
    assert fake_sysfs.state(4) == "offline"


async def test_when_the_kernel_onlines_hotplugd_verifies_and_takes_only_what_it_left(fake_sysfs, hook_recorder):
    fake_sysfs.set_auto_online("online_movable")
    fake_sysfs.add_blocks(range(4, 6))  # offline at start: the kernel left them, hotplugd takes them after the grace
    daemon, provider = make(fake_sysfs, hook_recorder, zones={"policy": "movable"},
                            scheduler={"onliner": "auto", "kernel_grace": 0.05})
    async with anyio.create_task_group() as tg:
        await tg.start(functools.partial(daemon.run, until_idle=True))
        fake_sysfs.add_block(6, state="online", zones=("Movable",))
        provider.backend.feed(fake_sysfs.uevent("add", 6))
        provider.backend.feed(fake_sysfs.uevent("online", 6))
        provider.backend.end()
    assert fake_sysfs.writes == [(4, "online_movable"), (5, "online_movable")]
    assert fake_sysfs.knob_writes == []  # the knobs already said what the plan wants
    assert hook_recorder.outcomes() == {4: "onlined", 5: "onlined", 6: "onlined"}
    assert [r.attempts for r in sorted(hook_recorder.reports, key=lambda r: r.block.index)] == [1, 1, 0]
    assert daemon.conflicts == []  # the kernel's auto-online is no udev rule: the plan judges the knobs


async def test_ready_only_after_the_socket_is_bound_and_coldplug_is_queued(fake_sysfs):
    fake_sysfs.add_blocks(range(8, 11))
    probe = ReadyProbe()
    daemon, _ = make(fake_sysfs, notifier=probe, sysfs={"netlink": True, "rcvbuf": "1MiB"},
                     scheduler={"parallel_hotplug_ratio": 1.0, "defer": "always", "settle": 30.0,
                                "max_defer": 60.0})
    probe.daemon = daemon
    async with anyio.create_task_group() as tg:
        with anyio.fail_after(10):
            await tg.start(daemon.run)
        tg.cancel_scope.cancel()
    assert probe.at_ready == {"queued": 3, "netlink_bound": True}


async def test_the_installed_entry_point_registers_sysfs(fake_sysfs):
    pm = make_manager(load_entry_points=True, environ={})
    entry = {e.name: e for e in backend_registry(pm).entries()}["sysfs"]
    assert entry.plugin == "sysfs"
    backend = entry.factory(fake_sysfs.options(concurrency=2))
    assert isinstance(backend, SysfsBackend) and backend.concurrency == 2
