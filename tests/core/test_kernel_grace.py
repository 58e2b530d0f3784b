"""Where the kernel onlines, hotplugd takes over only what the kernel has really left.

The kernel adds every block of a memory device before it onlines the first: the grace
(``scheduler.kernel_grace``) runs from the domain's last memory event, bounded by
``scheduler.kernel_grace_max``; a block hotplugd's write finds online already is the
kernel's. The deferral rule alone, then through the real Daemon on the fake host with a
manual clock.
"""

from __future__ import annotations

import errno

import anyio
import pytest

from hotplugd.config import SchedulerConfig, from_mapping
from hotplugd.engine.deferral import decide
from hotplugd.engine.queue import PendingQueue
from hotplugd.errors import ConfigError
from hotplugd.model import Action, Block, BlockEvent, OnlineResult, Outcome, Topology, Trigger
from hotplugd.testing import FakeBackend, FakeHost, ManualClock, running, sample, wait_until

MiB = 128 << 20
KERNEL = Topology({0: 2}, 64 << 30, 128 << 20, kernel_onlines=True)
HOST = {"domain": "host", "node": "0", "zone": "Normal"}


def added(times: list[float], last_event: float | None = None) -> PendingQueue:
    queue = PendingQueue(1000)
    for index, t in enumerate(times):
        queue.add(Block(index, MiB), t)
    queue.last_event = last_event if last_event is not None else max(times)
    return queue


def cfg(**kw) -> SchedulerConfig:
    return SchedulerConfig(**{"kernel_grace": 2.0, "kernel_grace_max": 60.0, **kw})


# -- the rule --------------------------------------------------------------------------------


def test_blocks_still_being_added_past_the_grace_are_not_taken():
    # a DIMM whose adds took 3 s: its first block waited past the grace, but the kernel is at work
    queue = added([10.0 + 0.1 * i for i in range(31)])  # last add at 13.0
    decision = decide(cfg(), queue, 14.0, KERNEL, 8)
    assert decision.trigger is None and decision.wait == pytest.approx(1.0)


def test_an_online_event_of_another_block_restarts_the_grace():
    queue = added([10.0], last_event=11.5)  # the kernel onlined some other block at 11.5
    assert decide(cfg(), queue, 12.5, KERNEL, 8).trigger is None
    assert decide(cfg(), queue, 13.5, KERNEL, 8).trigger is Trigger.KERNEL_LEFT


def test_a_quiet_domain_hands_its_offline_blocks_to_hotplugd():
    assert decide(cfg(), added([10.0]), 12.0, KERNEL, 8).trigger is Trigger.KERNEL_LEFT


def test_blocks_found_offline_at_start_wait_the_grace_from_their_queueing():
    queue = added([100.0], last_event=None)
    queue.last_event = None  # no event seen yet: boot memory left offline, found by the scan
    assert decide(cfg(), queue, 101.0, KERNEL, 8).wait == pytest.approx(1.0)
    assert decide(cfg(), queue, 102.0, KERNEL, 8).trigger is Trigger.KERNEL_LEFT


def test_a_kernel_that_never_goes_quiet_is_bounded():
    queue = added([10.0], last_event=69.5)
    decision = decide(cfg(), queue, 69.9, KERNEL, 8)
    assert decision.trigger is None and decision.wait == pytest.approx(0.1)
    assert decide(cfg(), queue, 70.0, KERNEL, 8).trigger is Trigger.KERNEL_BOUND


def fresh(times: list[float], walk: int | None) -> PendingQueue:
    """Blocks 10, 11, ... announced by add events at ``times``; the kernel's last online was block ``walk``."""
    queue = PendingQueue(1000)
    for offset, t in enumerate(times):
        queue.add(Block(10 + offset, MiB), t, fresh=True)
    queue.last_event, queue.walk = max(times), walk
    return queue


def test_a_kernel_paused_mid_walk_longer_than_the_grace_keeps_its_blocks():
    # blocks 10..13 added, the kernel onlined up to block 9 of the same DIMM, then paused 5 s under load
    queue = fresh([10.0, 10.1, 10.2, 10.3], walk=9)
    decision = decide(cfg(), queue, 15.3, KERNEL, 8)
    assert decision.trigger is None and decision.wait == pytest.approx(60.0 - 5.3)
    assert decide(cfg(), fresh([10.0], walk=None), 15.0, KERNEL, 8).trigger is None  # no online seen yet
    assert decide(cfg(), queue, 70.0, KERNEL, 8).trigger is Trigger.KERNEL_BOUND  # a walk stopped short


def test_blocks_the_walk_passed_are_left_once_quiet():
    queue = fresh([10.0, 10.1], walk=12)  # the kernel onlined block 12 after them: 10 and 11 it left
    assert decide(cfg(), queue, 12.1, KERNEL, 8).trigger is Trigger.KERNEL_LEFT
    queue.discard(11)
    queue.add(Block(30, MiB), 12.2, fresh=True)  # the next DIMM's first block, not reached yet
    assert decide(cfg(), queue, 14.3, KERNEL, 8).trigger is None
    queue.discard(30)  # the kernel onlined it
    assert decide(cfg(), queue, 14.3, KERNEL, 8).trigger is Trigger.KERNEL_LEFT


def test_a_bound_below_the_grace_is_refused_naming_the_key():
    with pytest.raises(ConfigError, match=r"scheduler.kernel_grace_max: must be at least scheduler.kernel_grace"):
        from_mapping({"scheduler": {"kernel_grace": "10s", "kernel_grace_max": "5s"}})
    assert from_mapping({}).scheduler.kernel_grace_max == 300.0


# -- through the daemon ----------------------------------------------------------------------

pytestmark_async = pytest.mark.asyncio


async def tick(daemon, clock: ManualClock, seconds: float) -> None:
    clock.advance(seconds)
    daemon.scheduler.wake()
    await anyio.sleep(0.02)


def kernel_onlines(host: FakeHost, backend: FakeBackend, index: int) -> None:
    host.add(index, state=host.blocks[index].state.ONLINE, zones=("Normal",))
    backend.inject(BlockEvent(Action.ONLINE, index))


@pytestmark_async
async def test_a_dimm_whose_adds_outlast_the_grace_is_left_to_the_kernel(make_daemon, hotplugd_metrics,
                                                                        hook_recorder):
    clock = ManualClock()
    host = FakeHost(kernel_onlines=True)
    backend = FakeBackend(host)
    daemon = make_daemon(backend, clock=clock)
    async with running(daemon, until_idle=False):
        for index in range(12):  # one add every 0.5 s: 6 s of adds, three times the grace
            backend.add(index)
            await wait_until(lambda i=index: i in daemon.scheduler.host.queue)
            await tick(daemon, clock, 0.5)
        assert host.calls == []
        for index in range(12):  # then the kernel onlines them, 0.5 s each, with a pause of 3 s mid-walk
            kernel_onlines(host, backend, index)
            await wait_until(lambda i=index: i not in daemon.scheduler.host.queue)
            await tick(daemon, clock, 3.0 if index == 5 else 0.5)
        await wait_until(lambda: sample(hotplugd_metrics, "hotplugd_kernel_onlined_blocks_total", HOST) == 12)
        await tick(daemon, clock, 10)
    assert host.calls == []  # not one write of hotplugd's
    assert hook_recorder.phases == []
    assert sample(hotplugd_metrics, "hotplugd_blocks_onlined_total", HOST) == 0


@pytestmark_async
async def test_what_the_kernel_left_is_taken_once_it_is_quiet_and_the_log_says_why(make_daemon, hook_recorder,
                                                                                          hotplugd_logs):
    clock = ManualClock()
    host = FakeHost(kernel_onlines=True)
    backend = FakeBackend(host)
    daemon = make_daemon(backend, clock=clock)
    logs = hotplugd_logs
    async with running(daemon, until_idle=False):
        backend.add(1, 2, 3)
        await wait_until(lambda: len(daemon.scheduler.host.queue) == 3)
        await tick(daemon, clock, 1.5)
        kernel_onlines(host, backend, 3)  # the kernel is still at work at 1.5 s; its walk passed 1 and 2
        await wait_until(lambda: 3 not in daemon.scheduler.host.queue)
        await tick(daemon, clock, 1.0)
        assert host.calls == []  # 2.5 s since the adds, 1 s of quiet
        await tick(daemon, clock, 1.5)
        await wait_until(lambda: host.online_indices() == {1, 2, 3})
    assert sorted(index for index, _ in host.calls) == [1, 2]
    assert [p.trigger for p in hook_recorder.phases] == ["kernel_left_offline"]
    [takeover] = [e for e in logs if e["event"] == "kernel_takeover"]
    assert takeover["blocks"] == 2 and takeover["quiet_seconds"] == pytest.approx(2.5)
    assert takeover["oldest_waited_seconds"] == pytest.approx(4.0)
    assert "no memory event for kernel_grace" in takeover["reason"]


@pytestmark_async
async def test_a_never_quiet_kernel_is_taken_over_at_the_bound(make_daemon, hook_recorder, hotplugd_logs):
    clock = ManualClock()
    host = FakeHost(kernel_onlines=True)
    backend = FakeBackend(host)
    daemon = make_daemon(backend, clock=clock, kernel_grace_max=5.0)
    logs = hotplugd_logs
    async with running(daemon, until_idle=False):
        backend.add(0)
        await wait_until(lambda: 0 in daemon.scheduler.host.queue)
        for index in range(100, 106):  # other blocks keep coming, one a second
            await tick(daemon, clock, 1.0)
            backend.add(index)
            await wait_until(lambda i=index: i in daemon.scheduler.host.queue)
            if host.calls:
                break
        await wait_until(lambda: 0 in host.online_indices())
    assert hook_recorder.phases[0].trigger == "kernel_grace_max"
    [takeover] = [e for e in logs if e["event"] == "kernel_takeover"]
    assert takeover["log_level"] == "warning" and takeover["oldest_waited_seconds"] == pytest.approx(5.0)


@pytestmark_async
async def test_a_block_found_online_by_hotplugds_write_is_the_kernels(make_daemon, hotplugd_metrics, hook_recorder):
    clock = ManualClock()
    host = FakeHost(kernel_onlines=True)
    backend = FakeBackend(host)
    daemon = make_daemon(backend, clock=clock)
    async with running(daemon, until_idle=False):
        backend.add(1, 2, 3)
        await wait_until(lambda: len(daemon.scheduler.host.queue) == 3)
        kernel_onlines(host, backend, 3)
        await wait_until(lambda: 3 not in daemon.scheduler.host.queue)
        host.script(1, OnlineResult(Outcome.ALREADY_ONLINE, zone="Normal", errno=errno.EINVAL))
        host.add(1, state=host.blocks[1].state.ONLINE, zones=("Normal",))  # its online event is late
        await tick(daemon, clock, 2.5)
        await wait_until(lambda: len(hook_recorder.reports) == 3)
    assert sorted(index for index, _ in host.calls) == [1, 2]
    assert sample(hotplugd_metrics, "hotplugd_kernel_onlined_blocks_total", HOST) == 2  # 3 by event, 1 found
    assert sample(hotplugd_metrics, "hotplugd_blocks_onlined_total", HOST) == 1  # block 2: hotplugd's own
    assert sample(hotplugd_metrics, "hotplugd_blocks_verified_total") == 2
    assert {r.block.index: (r.result.outcome.value, r.attempts) for r in hook_recorder.reports} == {
        1: ("onlined", 0), 2: ("onlined", 1), 3: ("onlined", 0)}  # block 1 reported once, as the kernel's
    assert daemon.scheduler.host.onlined == 1


@pytestmark_async
async def test_where_hotplugd_onlines_a_block_found_online_is_not_counted_as_its_own(make_daemon, hotplugd_metrics):
    host = FakeHost()
    backend = FakeBackend(host)
    daemon = make_daemon(backend)
    host.script(4, OnlineResult(Outcome.ALREADY_ONLINE, zone="Normal", errno=errno.EINVAL))
    backend.add(4, 5)
    backend.end()
    await daemon.run(until_idle=True)
    assert daemon.scheduler.host.onlined == 1
    assert sample(hotplugd_metrics, "hotplugd_blocks_verified_total") == 1
    assert sample(hotplugd_metrics, "hotplugd_kernel_onlined_blocks_total", HOST) == 0


def test_blocks_found_at_start_with_the_kernels_onlining_off_are_taken_at_once():
    # boot memory found offline by the start-up scan while auto_online_blocks still read offline:
    # added before the plan turned the kernel's onlining on, so no kernel onlines it; no grace
    queue = PendingQueue(1000)
    queue.add(Block(4, MiB), 100.0, kernel_off=True)
    queue.add(Block(5, MiB), 100.0, kernel_off=True)
    queue.last_event = None
    assert decide(cfg(), queue, 100.0, KERNEL, 8).trigger is Trigger.KERNEL_OFF
    assert queue.kernel_off_indices() == {4, 5}
    queue.discard(4)
    assert queue.kernel_off == 1
    assert [w.block.index for w in queue.take()] == [5] and queue.kernel_off == 0
    queue.add(Block(6, MiB), 101.0)  # found by a later scan (the kernel's onlining on by then): the grace again
    assert decide(cfg(), queue, 101.0, KERNEL, 8).wait == pytest.approx(2.0)
