"""The engine's parts on their own: the Verifier, the FinalPhase and a DomainScheduler, with the manual clock.

Each is built from an EngineContext over the fake host, with no daemon around it:
what the daemon's tests show end to end, shown here at the part that decides it.
Time is the manual clock's; a domain's loop is driven by advancing it and waking the loop.
"""

from __future__ import annotations

import errno
from collections.abc import Sequence
from typing import Any

import anyio
import pytest
from anyio.lowlevel import checkpoint
from structlog.testing import capture_logs

from hotplugd.config import from_mapping
from hotplugd.engine.book import BlockBook, Stage
from hotplugd.engine.context import EngineContext
from hotplugd.engine.domain import DomainScheduler
from hotplugd.engine.onliner import Onliner
from hotplugd.engine.phase import FinalPhase
from hotplugd.engine.queue import Waiting
from hotplugd.engine.verify import FIRST_POLL, MAX_POLL, Verifier
from hotplugd.model import HOST_DOMAIN, Action, Block, BlockEvent, NodeLedger, OnlineResult, Outcome, State
from hotplugd.observe.metrics import Metrics
from hotplugd.plugin.hooks import Hooks
from hotplugd.plugin.manager import make_manager
from hotplugd.testing import FakeBackend, FakeHost, HookRecorder, ManualClock, sample, wait_until

pytestmark = pytest.mark.asyncio


class Engine:
    """An EngineContext over a fake host, a manual clock, a hook recorder and fresh metrics."""

    def __init__(self, backend: FakeBackend | None = None, *, zones: dict[str, Any] | None = None,
                 **scheduler: Any) -> None:
        self.clock = ManualClock()
        self.backend = backend or FakeBackend(FakeHost({0: 4, 1: 4}), concurrency=4)
        self.host = self.backend.host
        self.recorder = HookRecorder()
        self.metrics = Metrics()
        config = from_mapping({"backend": "test", "scheduler": scheduler, "zones": zones or {}})
        pm = make_manager((), load_entry_points=False, extra=[("hook-recorder", self.recorder)], environ={})
        self.ctx = EngineContext(config, Hooks(pm), self.backend, self.metrics, self.clock)

    def sample(self, name: str, labels: dict[str, str] | None = None) -> float | None:
        return sample(self.metrics, name, labels or {})


def queued(*blocks: Block, since: float = 1000.0) -> list[Waiting]:
    return [Waiting(block, since) for block in blocks]


# -- Verifier -------------------------------------------------------------------------


def verifier(engine: Engine) -> tuple[Verifier, BlockBook]:
    book = BlockBook(100)
    return Verifier(engine.ctx, book, Onliner(engine.ctx, NodeLedger())), book


async def read_back(v: Verifier, book: BlockBook, now: float) -> None:
    await v.verify(book.due_verifications(now))


async def test_verifier_proves_a_block_the_kernel_onlined_once_as_the_kernels():
    engine = Engine()
    block = engine.host.add(3, state=State.ONLINE, zones=("Normal",))
    v, book = verifier(engine)
    book.verify(block, engine.clock() - 2.0, engine.clock())  # added 2 s ago
    await read_back(v, book, engine.clock())
    assert book.stage(3) is Stage.ONLINE and not book.unsettled
    assert engine.sample("hotplugd_kernel_onlined_blocks_total", {"domain": HOST_DOMAIN, "node": "0",
                                                                  "zone": "Normal"}) == 1
    assert not engine.sample("hotplugd_blocks_onlined_total", {"domain": HOST_DOMAIN, "node": "0", "zone": "Normal"})
    assert engine.sample("hotplugd_online_outcomes_total", {"outcome": "onlined", "errno": "0"}) == 1
    assert engine.sample("hotplugd_add_to_online_seconds_sum") == 2.0
    [report] = engine.recorder.reports
    assert (report.result.outcome, report.waited, report.attempts) == (Outcome.ONLINED, 2.0, 0)
    assert v.onliner.ledger.kernel[0] == block.size and v.onliner.ledger.movable[0] == 0
    await read_back(v, book, engine.clock() + 100)  # settled: nothing is read back twice
    assert len(engine.recorder.reports) == 1


async def test_verifier_counts_a_block_in_another_zone_than_promised_as_an_error_untimed_without_its_add():
    engine = Engine(zones={"policy": "movable"})
    block = engine.host.add(3, state=State.ONLINE, zones=("Normal",))
    v, book = verifier(engine)
    book.verify(block, None, engine.clock())  # its add was never seen
    with capture_logs() as logs:
        await read_back(v, book, engine.clock())
    [report] = engine.recorder.reports
    assert report.result.outcome is Outcome.ERROR and "promised online_movable" in report.result.detail
    assert engine.sample("hotplugd_zone_mismatches_total") == 1
    assert engine.sample("hotplugd_online_outcomes_total", {"outcome": "error", "errno": "0"}) == 1
    assert engine.sample("hotplugd_add_to_online_seconds_count") == 0
    assert [e["found"] for e in logs if e["event"] == "zone_wrong"] == ["Normal"]
    assert book.stage(3) is Stage.ONLINE


async def test_verifier_forgets_a_gone_block_and_queues_one_read_back_offline_with_its_add_time():
    engine = Engine()
    v, book = verifier(engine)
    offline = engine.host.add(4)
    book.verify(Block(3, offline.size, state=State.ONLINE), 990.0, engine.clock())  # 3 is not on the host
    book.verify(offline, 995.0, engine.clock())
    await read_back(v, book, engine.clock())
    assert book.stage(3) is None and book.stage(4) is Stage.QUEUED
    assert book.queue.oldest == 995.0
    assert engine.recorder.reports == []  # neither is an outcome


async def test_verifier_polls_a_half_online_block_until_the_kernel_finishes_and_alerts_past_the_bound():
    engine = Engine(kernel_phase_timeout=10.0)
    block = engine.host.add(3, state=State.KERNEL_DEFERRED)
    v, book = verifier(engine)
    book.verify(block, None, engine.clock(), deferred=True)
    start = engine.clock()
    await read_back(v, book, start)
    assert book.stage(3) is Stage.VERIFY and book.next_poll(start) == pytest.approx(FIRST_POLL)
    engine.clock.advance(11.0)
    await read_back(v, book, engine.clock())
    assert engine.sample("hotplugd_kernel_deferred_stuck_blocks") == 1
    assert book.next_poll(engine.clock()) == pytest.approx(MAX_POLL) and not book.unsettled  # stuck: not waited for
    engine.host.blocks[3] = Block(3, block.size, state=State.ONLINE, valid_zones=("Normal",))
    engine.clock.advance(1.0)
    await read_back(v, book, engine.clock())
    assert book.stage(3) is Stage.ONLINE
    assert engine.sample("hotplugd_kernel_deferred_stuck_blocks") == 0
    assert engine.sample("hotplugd_kernel_final_phase_seconds_sum") == pytest.approx(12.0)


async def test_verifier_reads_back_again_later_when_the_backend_fails():
    engine = Engine()
    v, book = verifier(engine)

    async def broken(blocks: Sequence[Block]) -> list[Block | None]:
        raise OSError(errno.EIO, "I/O error")

    engine.backend.verify = broken  # type: ignore[method-assign]
    book.verify(engine.host.add(3, state=State.ONLINE), None, engine.clock())
    await read_back(v, book, engine.clock())
    assert book.stage(3) is Stage.VERIFY and book.next_poll(engine.clock()) == pytest.approx(MAX_POLL)
    assert engine.recorder.reports == []


async def test_verifier_gives_no_verdict_on_a_block_removed_and_added_again_while_it_was_read_back():
    engine = Engine()
    v, book = verifier(engine)
    block = engine.host.add(3, state=State.ONLINE, zones=("Normal",))
    answer = anyio.Event()

    async def slow(blocks: Sequence[Block]) -> list[Block | None]:
        await answer.wait()
        return [block]

    engine.backend.verify = slow  # type: ignore[method-assign]
    book.verify(block, None, engine.clock())
    async with anyio.create_task_group() as tg:
        tg.start_soon(read_back, v, book, engine.clock())
        await anyio.wait_all_tasks_blocked()
        book.remove(3)
        book.queue_block(Block(3, block.size), engine.clock())
        answer.set()
    assert book.stage(3) is Stage.QUEUED and 3 in book.queue
    assert engine.recorder.reports == []


# -- FinalPhase -----------------------------------------------------------------------


def phase(engine: Engine, **kw: Any) -> FinalPhase:
    return FinalPhase(engine.ctx, Onliner(engine.ctx, NodeLedger()), **kw)


async def test_final_phase_onlines_each_node_in_address_order_and_reports_every_block_once():
    engine = Engine()
    blocks = [engine.host.add(i, node=i % 2) for i in (7, 2, 5, 4)]
    p = phase(engine, concurrency=1)  # one worker per node, one online at a time across them
    result = await p.run(queued(*blocks), "settle", engine.host.topology())
    calls = [i for i, _ in engine.host.calls]
    assert [i for i in calls if i % 2 == 0] == [2, 4] and [i for i in calls if i % 2] == [5, 7]
    assert engine.host.max_running == 1 and result.info.workers == {0: 1, 1: 1}
    assert sorted(r.block.index for r in result.reports) == [2, 4, 5, 7] and result.untouched == []
    assert engine.host.online_indices() == {2, 4, 5, 7}
    assert engine.recorder.names()[0] == "hotplugd_phase_started" and engine.recorder.names()[-1] == \
        "hotplugd_phase_finished"
    assert result.info.number == 1 and result.info.blocks == 4 and result.info.trigger == "settle"
    assert engine.sample("hotplugd_phases_total", {"trigger": "settle"}) == 1


async def test_final_phase_keeps_within_its_budget_and_serial_phases_take_arrival_order():
    engine = Engine()
    engine.host.cost = 0.001
    blocks = [engine.host.add(i, node=i % 2) for i in range(12)]
    await phase(engine).run(queued(*blocks), "max_defer", engine.host.topology(), budget=2)
    assert engine.host.max_running <= 2

    serial = Engine(parallel_hotplug_ratio=0)
    blocks = [serial.host.add(i, node=i % 2) for i in (9, 1, 8, 0)]
    result = await phase(serial).run(queued(*blocks), "ratio_0", serial.host.topology())
    assert [i for i, _ in serial.host.calls] == [9, 1, 8, 0]
    assert serial.host.max_running == 1 and result.info.workers == {0: 1, 1: 1}


async def test_final_phase_leaves_every_block_untouched_when_the_daemon_is_stopping():
    engine = Engine()
    blocks = [engine.host.add(i) for i in range(3)]
    p = phase(engine)
    p.onliner.stopping = True
    result = await p.run(queued(*blocks), "settle", engine.host.topology())
    assert result.reports == [] and [w.block.index for w in result.untouched] == [0, 1, 2]
    assert engine.host.calls == []


class SerialisingBackend(FakeBackend):
    """Declares 4 concurrent onlines, but each call takes 10 ms of the manual clock, one after another."""

    def __init__(self, clock: ManualClock) -> None:
        super().__init__(FakeHost({0: 8}), concurrency=4)
        self.clock = clock

    async def online(self, block: Block, zone: Any) -> OnlineResult:
        self.clock.advance(0.01)
        return await super().online(block, zone)


async def test_final_phase_measures_a_serialising_backend_and_warns_once():
    engine = Engine()
    engine.ctx = EngineContext(engine.ctx.config, engine.ctx.hooks, SerialisingBackend(engine.clock),
                               engine.metrics, engine.clock)
    host = engine.ctx.backend.host  # type: ignore[attr-defined]
    p = phase(engine)
    with capture_logs() as logs:
        for first in (0, 100):
            blocks = [host.add(first + i) for i in range(16)]
            result = await p.run(queued(*blocks), "settle", host.topology())
    assert p.solo_seconds == pytest.approx(0.01)  # the calibration's solo call
    assert result.effective_concurrency == pytest.approx(1.0)  # 16 calls of 10 ms in 160 ms
    assert [e["declared"] for e in logs if e["event"] == "parallelism_not_achieved"] == [4]


# -- DomainScheduler ---------------------------------------------------------------------


def add(block: Block) -> BlockEvent:
    return BlockEvent(Action.ADD, block.index, block)


async def test_domain_queues_and_publishes_each_event_and_forgets_a_removed_block():
    engine = Engine()
    domain = DomainScheduler(engine.ctx, HOST_DOMAIN)
    domain.handle(add(engine.host.add(1)))
    domain.handle(add(engine.host.add(2)))
    assert len(domain.queue) == 2 and domain.snapshot.pending == 2 and domain.snapshot.oldest == engine.clock()
    domain.handle(BlockEvent(Action.REMOVE, 1))
    assert list(domain.queue._items) == [2] and domain.snapshot.pending == 1
    domain.handle(BlockEvent(Action.ONLINE, 2))  # another onliner was first
    assert len(domain.queue) == 0 and domain.verified == 1
    assert engine.sample("hotplugd_blocks_verified_total") == 1


async def test_domain_loop_defers_by_the_clock_then_retries_a_transient_failure_when_due():
    engine = Engine(settle=5.0, max_defer=600.0, retries=0, retry_failed_after=30.0)
    domain = DomainScheduler(engine.ctx, HOST_DOMAIN)
    domain.apply_scan([], engine.host.topology(), "start")
    engine.host.script(1, OnlineResult(Outcome.TRANSIENT, errno=errno.EBUSY))
    async with anyio.create_task_group() as tg:
        tg.start_soon(domain.run)
        domain.handle(add(engine.host.add(1)))
        await anyio.wait_all_tasks_blocked()
        for _ in range(10):
            await checkpoint()
        assert engine.host.calls == [] and len(domain.queue) == 1  # settle: 5 s of the clock not passed

        engine.clock.advance(5.0)
        domain.wake()
        await wait_until(lambda: domain.snapshot.failed == 1, what="the phase's transient failure, published")
        assert domain.onlined == 0 and domain.book.failed_count == 1

        engine.clock.advance(30.0)  # the retry is due: queued again, then past its settle
        domain.wake()
        await wait_until(lambda: len(domain.queue) == 1, what="the retry queued")
        engine.clock.advance(5.0)
        domain.wake()
        await wait_until(lambda: domain.onlined == 1, what="the retry onlined")
        assert engine.host.online_indices() == {1} and domain.book.failed_count == 0 and domain.idle
        domain.stop()
    assert [p.trigger for p in engine.recorder.phases] == ["settle", "settle"]
