"""Backends that online a run of blocks per call (``batch_size``/``online_many``)."""

from __future__ import annotations

import errno

import pytest

from hotplugd.model import OnlineResult, Outcome, State, ZoneRequest
from hotplugd.plugin.spec import hookimpl
from hotplugd.testing import FakeBackend, FakeHost, sample

pytestmark = pytest.mark.asyncio


class Batching(FakeBackend):
    batch_size = 4

    def __init__(self, host: FakeHost, fail: bool = False) -> None:
        super().__init__(host, concurrency=1)
        self.runs: list[list[int]] = []
        self.fail = fail

    async def online_many(self, items):
        self.runs.append([block.index for block, _ in items])
        if self.fail:
            raise RuntimeError("agent went away")
        return await super().online_many(items)


def coldplugged(count: int, **kw) -> FakeHost:
    host = FakeHost({0: 1}, **kw)
    for index in range(count):
        host.add(index)
    return host


async def test_a_serial_phase_hands_runs_of_blocks_to_the_backend(make_daemon, hook_recorder):
    backend = Batching(coldplugged(10))
    daemon = make_daemon(backend)
    backend.end()
    await daemon.run(until_idle=True)
    assert backend.runs == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]
    assert backend.host.online_indices() == set(range(10))
    assert len(hook_recorder.reports) == 10 and all(r.result.outcome is Outcome.ONLINED for r in hook_recorder.reports)


async def test_a_transient_error_in_a_run_retries_that_block_alone(make_daemon, hook_recorder, hotplugd_metrics):
    host = coldplugged(4)
    host.script(2, OnlineResult(Outcome.TRANSIENT, errno=errno.EBUSY))
    backend = Batching(host)
    daemon = make_daemon(backend, retry_backoff=0.0001)
    backend.end()
    await daemon.run(until_idle=True)
    assert backend.runs == [[0, 1, 2, 3]]
    assert host.online_indices() == {0, 1, 2, 3}
    assert {r.block.index: r.attempts for r in hook_recorder.reports}[2] == 2
    assert sample(hotplugd_metrics, "hotplugd_online_retries_total") == 1


async def test_a_failing_run_marks_its_blocks_failed_and_the_daemon_goes_on(make_daemon, hook_recorder):
    backend = Batching(coldplugged(3), fail=True)
    daemon = make_daemon(backend)
    backend.end()
    await daemon.run(until_idle=True)
    assert hook_recorder.outcomes() == {0: "error", 1: "error", 2: "error"}
    assert set(daemon.scheduler.host.failed) == {0, 1, 2}


async def test_auto_movable_holds_its_ratio_within_a_run(make_daemon):
    host = FakeHost({0: 1})
    for index in range(100, 104):  # 512 MiB of kernel memory
        host.add(index, state=State.ONLINE, zones=("Normal",))
    for index in range(8):
        host.add(index)
    backend = Batching(host)
    daemon = make_daemon(backend, {"zones": {"policy": "auto-movable", "auto_movable_ratio": 100}})
    backend.end()
    await daemon.run(until_idle=True)
    zones = [zone for _, zone in host.calls]
    # 4 movable fit against 512 MiB of kernel memory; then kernel, which makes room for one more
    assert zones == [ZoneRequest.MOVABLE] * 4 + [ZoneRequest.KERNEL, ZoneRequest.MOVABLE,
                                                   ZoneRequest.KERNEL, ZoneRequest.MOVABLE]


class RunsSeen:
    """Records, for each block reported, how many online_many calls the backend had started by then."""

    def __init__(self, backend: Batching) -> None:
        self.backend = backend
        self.calls_started: dict[int, int] = {}

    @hookimpl
    def hotplugd_block_outcome(self, report) -> None:
        self.calls_started[report.block.index] = len(self.backend.runs)


async def test_the_next_run_is_called_while_the_last_one_is_accounted(make_daemon):
    backend = Batching(coldplugged(10))
    backend.host.cost = 0.005
    seen = RunsSeen(backend)
    daemon = make_daemon(backend, plugins=[("runs-seen", seen)])
    backend.end()
    await daemon.run(until_idle=True)
    assert backend.host.max_running == 1  # still one backend call at a time
    # run 1 (blocks 0-3) is accounted once run 2's call has started, run 2 once run 3's has
    assert [seen.calls_started[i] for i in (0, 3, 4, 7, 8, 9)] == [2, 2, 3, 3, 3, 3]
