"""Every scheduler rule through the real Daemon, on the fake host, with a manual clock."""

from __future__ import annotations

import errno

import anyio
import pytest
from structlog.testing import capture_logs

from hotplugd.model import Action, BlockEvent, OnlineResult, Outcome, Rescan, State, ZoneRequest
from hotplugd.testing import FakeBackend, FakeHost, ManualClock, running, sample, wait_until

pytestmark = pytest.mark.asyncio


def parallel(host: FakeHost | None = None, concurrency: int = 64) -> FakeBackend:
    return FakeBackend(host or FakeHost({0: 4}), concurrency=concurrency)


async def test_ratio_zero_onlines_each_block_at_once_serially(make_daemon, hook_recorder):
    backend = parallel()
    backend.host.cost = 0.001
    daemon = make_daemon(backend, parallel_hotplug_ratio=0)
    async with running(daemon, until_idle=False):
        backend.add(5, 3, 9)
        await wait_until(lambda: backend.host.online_indices() == {3, 5, 9})
    assert [i for i, _ in backend.host.calls] == [5, 3, 9]  # arrival order
    assert backend.host.max_running == 1
    assert set(hook_recorder.triggers()) == {"ratio_0"}


async def test_coldplug_queues_offline_blocks_at_start(make_daemon, hotplugd_metrics):
    host = FakeHost({0: 2})
    host.add(0, state=State.ONLINE, zones=("Normal",))
    host.add(1)
    host.add(2)
    backend = FakeBackend(host)
    daemon = make_daemon(backend)
    backend.end()
    await daemon.run(until_idle=True)
    assert host.online_indices() == {0, 1, 2}
    assert [i for i, _ in host.calls] == [1, 2]
    assert sample(hotplugd_metrics, "hotplugd_rescans_total", {"reason": "start"}) == 1


async def test_settle_starts_one_phase_for_a_burst(make_daemon, hook_recorder):
    clock = ManualClock()
    backend = parallel()
    daemon = make_daemon(backend, clock=clock, settle=0.2, max_defer=60)
    async with running(daemon, until_idle=False):
        backend.add(1, 2, 3)
        await wait_until(lambda: len(daemon.scheduler.host.queue) == 3)
        clock.advance(0.1)
        daemon.scheduler.wake()
        await anyio.sleep(0.01)
        assert not backend.host.calls, "onlined before the burst settled"
        clock.advance(0.15)
        daemon.scheduler.wake()
        await wait_until(lambda: backend.host.online_indices() == {1, 2, 3})
    assert hook_recorder.triggers() == ["settle"]
    assert hook_recorder.phases[0].blocks == 3


async def test_max_defer_bounds_the_wait_of_a_trickle(make_daemon, hook_recorder):
    clock = ManualClock()
    backend = parallel()
    daemon = make_daemon(backend, clock=clock, settle=0.2, max_defer=0.5)
    async with running(daemon, until_idle=False):
        for index in range(6):  # an add every 0.1 s: never settles
            backend.add(index)
            await wait_until(lambda i=index: i in daemon.scheduler.host.queue)
            clock.advance(0.1)
            daemon.scheduler.wake()
            await anyio.sleep(0)
        await wait_until(lambda: len(backend.host.online_indices()) == 5, what="the first five, by max_defer")
        clock.advance(0.3)
        daemon.scheduler.wake()
        await wait_until(lambda: len(backend.host.online_indices()) == 6, what="the last, by settle")
    assert hook_recorder.triggers() == ["max_defer", "settle"]


async def test_offline_bytes_start_the_phase_without_waiting(make_daemon, hook_recorder):
    clock = ManualClock()
    backend = parallel()
    daemon = make_daemon(backend, clock=clock, settle=60, max_defer=60, max_offline_bytes="512MiB")
    async with running(daemon, until_idle=False):
        backend.add(1, 2, 3)
        await wait_until(lambda: len(daemon.scheduler.host.queue) == 3)
        assert not backend.host.calls
        backend.add(4)  # 4 x 128 MiB = 512 MiB
        await wait_until(lambda: backend.host.online_indices() == {1, 2, 3, 4})
    assert hook_recorder.triggers() == ["offline_bytes"]


async def test_memmap_share_skips_deferral_under_pressure(make_daemon, hook_recorder):
    clock = ManualClock()
    backend = parallel(FakeHost({0: 4}, mem_available=8 << 20))  # 8 MiB available
    daemon = make_daemon(backend, clock=clock, settle=60, max_defer=60, max_memmap_share=0.25)
    async with running(daemon, until_idle=False):
        backend.add(1)  # 2 MiB of memmap = 25 % of MemAvailable: not above yet
        await wait_until(lambda: 1 in daemon.scheduler.host.queue)
        backend.add(2)  # 4 MiB > 2 MiB
        await wait_until(lambda: backend.host.online_indices() == {1, 2})
    assert hook_recorder.triggers() == ["memmap_share"]


async def test_serial_backend_onlines_at_once_by_default(make_daemon, hook_recorder):
    clock = ManualClock()
    backend = parallel(concurrency=1)
    daemon = make_daemon(backend, clock=clock, settle=60, max_defer=60)
    async with running(daemon, until_idle=False):
        backend.add(1)
        await wait_until(lambda: backend.host.online_indices() == {1})
    assert hook_recorder.triggers() == ["serial"]


async def test_workers_per_node_capped_by_backend_concurrency(make_daemon, hook_recorder):
    host = FakeHost({0: 4, 1: 2})
    host.cost = 0.005
    backend = FakeBackend(host, concurrency=3)
    daemon = make_daemon(backend, parallel_hotplug_ratio=1.0, defer="always", settle=0.001)
    backend.add(*range(0, 12), node=0)
    backend.add(*range(100, 112), node=1)
    backend.end()
    await daemon.run(until_idle=True)
    assert len(host.online_indices()) == 24
    assert hook_recorder.phases[0].workers == {0: 3, 1: 2}
    assert host.max_running <= 3


async def test_final_phase_goes_in_ascending_address_order(make_daemon):
    host = FakeHost({0: 1, 1: 1})
    backend = FakeBackend(host, concurrency=64)
    daemon = make_daemon(backend, parallel_hotplug_ratio=1.0, settle=0.001, max_offline_bytes="100GiB")
    for index in (7, 3, 9, 1):
        backend.add(index, node=0)
    for index in (40, 20, 30):
        backend.add(index, node=1)
    backend.end()
    await daemon.run(until_idle=True)
    node0 = [i for i, _ in host.calls if i < 20]
    node1 = [i for i, _ in host.calls if i >= 20]
    assert node0 == [1, 3, 7, 9] and node1 == [20, 30, 40]


async def test_remove_during_deferral_drops_the_block(make_daemon, hook_recorder, hotplugd_metrics):
    clock = ManualClock()
    backend = parallel()
    daemon = make_daemon(backend, clock=clock, settle=0.2, max_defer=60)
    async with running(daemon, until_idle=False):
        backend.add(1, 2, 3, 4)
        backend.remove(2)
        queue = daemon.scheduler.host.queue
        # every event taken (not just three blocks queued: 1, 2, 3 before 4's add and 2's remove came)
        await wait_until(lambda: len(queue) == 3 and 2 not in queue and all(i in queue for i in (1, 3, 4)))
        clock.advance(1)
        daemon.scheduler.wake()
        await wait_until(lambda: backend.host.online_indices() == {1, 3, 4})
    assert 2 not in [i for i, _ in backend.host.calls]
    assert all(outcome == "onlined" for outcome in hook_recorder.outcomes().values())
    assert sample(hotplugd_metrics, "hotplugd_uevents_received_total", {"action": "remove"}) == 1


async def test_each_outcome_is_reported_once(make_daemon, hook_recorder, hotplugd_metrics):
    host = FakeHost({0: 4})
    backend = FakeBackend(host, concurrency=1)
    daemon = make_daemon(backend, retry_backoff=0.0001, retries=3)
    host.script(1, OnlineResult(Outcome.TRANSIENT, errno=errno.EBUSY),
                OnlineResult(Outcome.TRANSIENT, errno=errno.ENOMEM))
    host.script(2, OnlineResult(Outcome.PERMANENT, errno=errno.EINVAL))
    host.script(3, OnlineResult(Outcome.GONE, errno=errno.ENOENT))
    host.script(4, OnlineResult(Outcome.ALREADY_ONLINE, zone="Normal", errno=errno.EINVAL))
    host.script(5, RuntimeError("backend bug"))
    host.script(6, *[OnlineResult(Outcome.TRANSIENT, errno=errno.EBUSY)] * 4)
    backend.add(1, 2, 3, 4, 5, 6, 7)
    backend.end()
    await daemon.run(until_idle=True)
    assert hook_recorder.outcomes() == {
        1: "onlined", 2: "permanent", 3: "gone", 4: "already_online", 5: "error", 6: "transient", 7: "onlined"}
    assert len(hook_recorder.reports) == 7
    attempts = {r.block.index: r.attempts for r in hook_recorder.reports}
    assert attempts[1] == 3 and attempts[6] == 4
    assert daemon.scheduler.host.failed == {2: Outcome.PERMANENT, 5: Outcome.ERROR, 6: Outcome.TRANSIENT}
    permanent = {"outcome": "permanent", "errno": str(errno.EINVAL)}
    assert sample(hotplugd_metrics, "hotplugd_online_outcomes_total", permanent) == 1
    assert sample(hotplugd_metrics, "hotplugd_online_retries_total") == 2 + 3
    assert daemon.scheduler.onlined == 2  # 1 and 7: block 4 was found online, another onliner's


async def test_permanent_failure_is_retried_on_the_next_rescan(make_daemon, hook_recorder):
    clock = ManualClock()
    backend = parallel(concurrency=1)
    backend.host.script(1, OnlineResult(Outcome.PERMANENT, errno=errno.EINVAL))
    daemon = make_daemon(backend, clock=clock)
    async with running(daemon, until_idle=False):
        backend.add(1)
        await wait_until(lambda: 1 in daemon.scheduler.host.failed)
        assert backend.host.online_indices().isdisjoint({1}), "a permanent failure stays offline"
        backend.inject(Rescan("request"))
        await wait_until(lambda: 1 in backend.host.online_indices())


async def test_a_block_whose_transient_errors_outlasted_the_retries_is_queued_again_later(make_daemon, hook_recorder):
    clock = ManualClock()
    backend = parallel(concurrency=1)
    busy = OnlineResult(Outcome.TRANSIENT, errno=errno.EBUSY)
    backend.host.script(1, busy, busy)  # the first attempt and its one retry
    backend.host.script(2, OnlineResult(Outcome.PERMANENT, errno=errno.EINVAL))
    daemon = make_daemon(backend, clock=clock, retries=1, retry_backoff=0.0001, retry_failed_after=30)
    async with running(daemon, until_idle=False):
        backend.add(1, 2)
        await wait_until(lambda: daemon.scheduler.host.failed == {1: Outcome.TRANSIENT, 2: Outcome.PERMANENT})
        clock.advance(29)
        daemon.scheduler.wake()
        await anyio.sleep(0.02)
        assert len(backend.host.calls) == 3, "queued again before retry_failed_after"
        clock.advance(1)
        daemon.scheduler.wake()
        await wait_until(lambda: 1 in backend.host.online_indices())
        assert daemon.scheduler.host.failed == {2: Outcome.PERMANENT}  # a permanent failure is not retried
    assert [i for i, _ in backend.host.calls] == [1, 1, 2, 1]


async def test_a_block_added_again_while_its_phase_fails_it_is_queued_again_at_once(make_daemon):
    clock = ManualClock()  # never advances: retry_failed_after cannot be what brings it back
    backend = parallel(concurrency=1)
    backend.host.cost = 0.05
    busy = OnlineResult(Outcome.TRANSIENT, errno=errno.EBUSY)
    backend.host.script(1, busy, busy)  # e.g. a guest's agent down for the first attempt and its retry
    daemon = make_daemon(backend, clock=clock, retries=1, retry_backoff=0.0001, retry_failed_after=30)
    async with running(daemon, until_idle=False):
        backend.add(1)
        await wait_until(lambda: 1 in daemon.scheduler.host.in_phase)
        backend.inject(BlockEvent(Action.ADD, 1, backend.host.blocks[1], synthetic=True))  # the agent is back
        await wait_until(lambda: 1 in backend.host.online_indices())
        assert daemon.scheduler.host.failed == {}
    assert [i for i, _ in backend.host.calls] == [1, 1, 1]


async def test_rescan_after_overflow_finds_blocks_whose_events_were_lost(make_daemon, hotplugd_metrics):
    backend = parallel(concurrency=1)
    daemon = make_daemon(backend)
    async with running(daemon, until_idle=False):
        for index in (10, 11, 12):
            backend.host.add(index)  # on the host, but their events were dropped
        backend.inject(Rescan("overflow"))
        await wait_until(lambda: backend.host.online_indices() == {10, 11, 12})
    assert sample(hotplugd_metrics, "hotplugd_rescans_total", {"reason": "overflow"}) == 1


async def test_full_queue_loses_no_block(make_daemon, hotplugd_metrics, hook_recorder):
    clock = ManualClock()
    backend = parallel()
    daemon = make_daemon(backend, clock=clock, max_pending_blocks=4, settle=60, max_defer=60)
    backend.host.cost = 0.02
    async with running(daemon, until_idle=False):
        backend.add(*range(4))  # fills the queue: a phase starts at once
        await wait_until(lambda: backend.host.running > 0, what="the first phase")
        backend.add(*range(4, 10))  # 4 fit while the phase runs, 2 are refused
        await wait_until(lambda: sample(hotplugd_metrics, "hotplugd_queue_full_total") >= 2, what="refused adds")
        with anyio.fail_after(10):
            while backend.host.online_indices() != set(range(10)):
                clock.advance(120)  # what the rescan finds waits for the timers like any add
                daemon.scheduler.wake()
                await anyio.sleep(0.001)
    assert "queue_full" in hook_recorder.triggers()
    assert sample(hotplugd_metrics, "hotplugd_rescans_total", {"reason": "queue_full"}) >= 1
    assert sorted(r.block.index for r in hook_recorder.reports) == list(range(10))


async def test_synthetic_add_for_an_online_block_changes_nothing(make_daemon):
    host = FakeHost()
    online = host.add(1, state=State.ONLINE, zones=("Normal",))
    backend = FakeBackend(host)
    daemon = make_daemon(backend)
    backend.inject(BlockEvent(Action.ADD, 1, online, synthetic=True))
    backend.end()
    await daemon.run(until_idle=True)
    assert host.calls == []


def kernel_onlines(host: FakeHost, backend: FakeBackend, index: int, zone: str = "Normal",
                   state: State = State.ONLINE) -> None:
    """The kernel onlines (or, the seed's, holds half-online) a block it announced: its event follows."""
    host.add(index, state=state, zones=(zone,))
    backend.inject(BlockEvent(Action.ONLINE, index))


async def test_kernel_auto_online_is_verified_timed_and_counted(make_daemon, hotplugd_metrics, hook_recorder):
    host = FakeHost(kernel_onlines=True)
    backend = FakeBackend(host)
    daemon = make_daemon(backend)
    async with running(daemon, until_idle=False):
        backend.add(1, 2)
        await wait_until(lambda: len(daemon.scheduler.host.queue) == 2)
        kernel_onlines(host, backend, 1)
        kernel_onlines(host, backend, 2)
        await wait_until(lambda: len(hook_recorder.reports) == 2)
    assert host.calls == []
    assert sample(hotplugd_metrics, "hotplugd_blocks_verified_total") == 2
    labels = {"domain": "host", "node": "0", "zone": "Normal"}
    assert sample(hotplugd_metrics, "hotplugd_kernel_onlined_blocks_total", labels) == 2
    assert sample(hotplugd_metrics, "hotplugd_blocks_onlined_total", labels) == 0
    assert sample(hotplugd_metrics, "hotplugd_add_to_online_seconds_count") == 2
    assert hook_recorder.outcomes() == {1: "onlined", 2: "onlined"}
    assert [r.attempts for r in hook_recorder.reports] == [0, 0]  # not one write of hotplugd's


async def test_a_block_the_kernel_put_in_the_wrong_zone_is_an_error_naming_both(make_daemon, hotplugd_metrics,
                                                                                 hook_recorder):
    host = FakeHost(kernel_onlines=True)
    backend = FakeBackend(host)
    daemon = make_daemon(backend, {"zones": {"policy": "movable"}})
    with capture_logs() as logs:
        async with running(daemon, until_idle=False):
            backend.add(1)
            await wait_until(lambda: len(daemon.scheduler.host.queue) == 1)
            kernel_onlines(host, backend, 1, zone="Normal")
            await wait_until(lambda: len(hook_recorder.reports) == 1)
    assert hook_recorder.outcomes() == {1: "error"}
    assert [(e["block"], e["wanted"], e["found"]) for e in logs if e["event"] == "zone_wrong"] == \
        [(1, "online_movable", "Normal")]
    assert sample(hotplugd_metrics, "hotplugd_zone_mismatches_total") == 1


async def test_a_block_the_kernel_left_offline_is_onlined_by_hotplugd_after_the_grace(make_daemon, hook_recorder):
    clock = ManualClock()
    host = FakeHost(kernel_onlines=True)
    backend = FakeBackend(host)
    daemon = make_daemon(backend, clock=clock)
    async with running(daemon, until_idle=False):
        backend.add(1, 2)
        await wait_until(lambda: len(daemon.scheduler.host.queue) == 2)
        kernel_onlines(host, backend, 2)  # its walk passed block 1
        await wait_until(lambda: 2 in hook_recorder.outcomes() and len(daemon.scheduler.host.queue) == 1)
        clock.advance(1.0)
        daemon.scheduler.wake()
        await anyio.sleep(0.05)
        assert host.calls == []  # within the grace the kernel may still online it
        clock.advance(1.5)
        daemon.scheduler.wake()
        await wait_until(lambda: host.online_indices() == {1, 2})
    assert host.calls == [(1, ZoneRequest.AUTO)]
    assert [p.trigger for p in hook_recorder.phases] == ["kernel_left_offline"]


async def test_the_seed_kernels_half_online_block_is_watched_until_its_final_phase_ends(make_daemon, hotplugd_metrics,
                                                                                        hook_recorder):
    host = FakeHost(kernel_onlines=True)
    backend = FakeBackend(host)
    daemon = make_daemon(backend)
    async with running(daemon, until_idle=False):
        backend.add(1)
        await wait_until(lambda: len(daemon.scheduler.host.queue) == 1)
        kernel_onlines(host, backend, 1, state=State.KERNEL_DEFERRED)
        await wait_until(lambda: daemon.scheduler.host.book.verifying == 1 and
                         daemon.scheduler.host.book.due_verifications(1e12)[0].deferred_since is not None)
        assert hook_recorder.reports == [] and host.calls == []  # not an error, not a retry
        host.add(1, state=State.ONLINE, zones=("Normal",))  # the kernel's final phase ends: no event
        await wait_until(lambda: hook_recorder.outcomes() == {1: "onlined"})
    assert sample(hotplugd_metrics, "hotplugd_kernel_final_phase_seconds_count") == 1
    assert sample(hotplugd_metrics, "hotplugd_kernel_deferred_stuck_blocks") == 0


async def test_a_block_half_online_past_the_bound_raises_the_alert(make_daemon, hotplugd_metrics):
    clock = ManualClock()
    host = FakeHost(kernel_onlines=True)
    backend = FakeBackend(host)
    daemon = make_daemon(backend, clock=clock, kernel_phase_timeout=10)
    async with running(daemon, until_idle=False):
        backend.add(1)
        await wait_until(lambda: len(daemon.scheduler.host.queue) == 1)
        kernel_onlines(host, backend, 1, state=State.KERNEL_DEFERRED)
        await wait_until(lambda: daemon.scheduler.host.book.verifying == 1)
        for _ in range(30):
            clock.advance(1.0)
            daemon.scheduler.wake()
            await anyio.sleep(0.01)
            if sample(hotplugd_metrics, "hotplugd_kernel_deferred_stuck_blocks"):
                break
        assert sample(hotplugd_metrics, "hotplugd_kernel_deferred_stuck_blocks") == 1
        host.add(1, state=State.ONLINE, zones=("Normal",))
        clock.advance(1.0)
        daemon.scheduler.wake()
        await wait_until(lambda: sample(hotplugd_metrics, "hotplugd_kernel_deferred_stuck_blocks") == 0)


async def test_block_onlined_by_someone_else_leaves_the_queue(make_daemon):
    clock = ManualClock()
    backend = parallel()
    daemon = make_daemon(backend, clock=clock, settle=60, max_defer=60)
    async with running(daemon, until_idle=False):
        backend.add(1, 2)
        await wait_until(lambda: len(daemon.scheduler.host.queue) == 2)
        backend.inject(BlockEvent(Action.ONLINE, 1))
        await wait_until(lambda: 1 not in daemon.scheduler.host.queue)
        clock.advance(120)
        daemon.scheduler.wake()
        await wait_until(lambda: 2 in backend.host.online_indices())
    assert [i for i, _ in backend.host.calls] == [2]


async def test_stop_finishes_the_call_in_flight_and_leaves_the_rest_offline(make_daemon):
    host = FakeHost({0: 1})
    host.cost = 0.05
    backend = FakeBackend(host, concurrency=1)
    daemon = make_daemon(backend)
    async with anyio.create_task_group() as tg:
        await tg.start(daemon.run)
        backend.add(*range(20))
        await wait_until(lambda: host.running == 1)
        daemon.scheduler.stop()
    assert host.running == 0
    assert len(host.calls) == 1 and host.online_indices() == {host.calls[0][0]}
    assert len(daemon.scheduler.host.queue) == 19 and "pending 19 blocks" in daemon.scheduler.status()


@pytest.mark.parametrize(("policy", "expected"), [("kernel", ZoneRequest.KERNEL), ("movable", ZoneRequest.MOVABLE),
                                                  ("auto", ZoneRequest.AUTO)])
async def test_zone_policy_is_written(make_daemon, policy, expected):
    backend = FakeBackend(FakeHost())
    daemon = make_daemon(backend, {"zones": {"policy": policy}})
    backend.add(1)
    backend.end()
    await daemon.run(until_idle=True)
    assert backend.host.calls == [(1, expected)]


async def test_auto_movable_keeps_the_node_ratio(make_daemon):
    host = FakeHost({0: 4, 1: 4})
    for index in range(4):  # 512 MiB of kernel memory on node 0, none on node 1
        host.add(index, node=0, state=State.ONLINE, zones=("Normal",))
    backend = FakeBackend(host, concurrency=1)
    daemon = make_daemon(backend, {"zones": {"policy": "auto-movable", "auto_movable_ratio": 100,
                                             "nodes": {"1": {"policy": "movable"}}}})
    backend.add(*range(10, 16), node=0)
    backend.add(50, node=1)
    backend.end()
    await daemon.run(until_idle=True)
    zones = dict(host.calls)
    # movable while movable + block <= 100 % of kernel: 4 blocks, then kernel; that grows the room again
    assert [zones[i] for i in range(10, 16)] == [ZoneRequest.MOVABLE] * 4 + [ZoneRequest.KERNEL, ZoneRequest.MOVABLE]
    assert zones[50] is ZoneRequest.MOVABLE


async def test_zone_stays_within_valid_zones(make_daemon):
    host = FakeHost()
    backend = FakeBackend(host)
    daemon = make_daemon(backend, {"zones": {"policy": "movable"}})
    block = host.add(1, zones=("Normal",))
    backend.inject(BlockEvent(Action.ADD, 1, block))
    backend.end()
    await daemon.run(until_idle=True)
    assert host.calls == [(1, ZoneRequest.KERNEL)]


async def test_a_busy_node_does_not_hold_back_another_nodes_blocks(make_daemon, hook_recorder):
    host = FakeHost({0: 2, 1: 2})
    host.node_cost = {0: 0.5}  # node 0's blocks are slow to online
    backend = FakeBackend(host, concurrency=4)
    daemon = make_daemon(backend, settle=0.001)
    async with running(daemon, until_idle=False):
        backend.add(1, 2, node=0)
        await wait_until(lambda: host.running == 2, what="node 0's phase")
        backend.add(10, 11, node=1)  # arrives while node 0's phase runs
        await wait_until(lambda: {10, 11} <= host.online_indices(), what="node 1's blocks")
        assert not {1, 2} & host.online_indices(), "node 1 had to wait for node 0's phase"
        await wait_until(lambda: {1, 2} <= host.online_indices(), what="node 0's blocks")
    assert [p.workers for p in hook_recorder.phases] == [{0: 2}, {1: 2}]
    assert host.max_running <= 4


async def test_overlapping_phases_share_the_backend_concurrency(make_daemon, hook_recorder):
    host = FakeHost({0: 4, 1: 4})
    host.node_cost = {0: 0.3, 1: 0.01}
    backend = FakeBackend(host, concurrency=5)
    daemon = make_daemon(backend, settle=0.001)
    async with running(daemon, until_idle=False):
        backend.add(*range(8), node=0)  # takes 4 workers of 5
        await wait_until(lambda: host.running == 4, what="node 0's phase")
        backend.add(*range(100, 104), node=1)  # one slot left for node 1
        await wait_until(lambda: set(range(100, 104)) <= host.online_indices(), what="node 1's blocks")
        await wait_until(lambda: set(range(8)) <= host.online_indices(), what="node 0's blocks")
    # node 1's phases, whichever numbers they got: on a loaded machine node 0's first block may settle alone,
    # and node 1's four adds may arrive over more than the 1 ms settle (two phases); each had the one slot left
    node1 = [p.workers for p in hook_recorder.phases if 1 in p.workers]
    assert node1 and all(workers == {1: 1} for workers in node1), node1
    assert host.max_running <= 5


async def test_serial_ratio_never_overlaps_phases(make_daemon):
    host = FakeHost({0: 2, 1: 2})
    host.cost = 0.01
    backend = FakeBackend(host, concurrency=4)
    daemon = make_daemon(backend, parallel_hotplug_ratio=0)
    async with running(daemon, until_idle=False):
        backend.add(1, 2, node=0)
        backend.add(10, 11, node=1)
        await wait_until(lambda: host.online_indices() == {1, 2, 10, 11})
    assert host.max_running == 1


async def test_concurrent_single_block_onlines_hold_the_auto_movable_ratio(make_daemon):
    """Each worker's zone is reserved in the node ledger until its report, as a run's are.

    Two workers online one block each at the same time; only one more movable block fits
    the node's ratio. Before the single-block path reserved its zone (only the run path
    did), both workers chose movable against the same ledger.
    """
    host = FakeHost({0: 2})
    for index in range(100, 104):  # 512 MiB of kernel memory on node 0
        host.add(index, state=State.ONLINE, zones=("Normal",))
    host.cost = 0.05  # both calls are in flight at once
    backend = FakeBackend(host, concurrency=2)
    daemon = make_daemon(backend, {"zones": {"policy": "auto-movable", "auto_movable_ratio": 25},
                                   "scheduler": {"parallel_hotplug_ratio": 1.0, "defer": "always", "settle": 0.01}})
    backend.add(1, 2, node=0)
    backend.end()
    await daemon.run(until_idle=True)
    assert host.max_running == 2
    assert sorted(zone for _, zone in host.calls) == [ZoneRequest.KERNEL, ZoneRequest.MOVABLE]
