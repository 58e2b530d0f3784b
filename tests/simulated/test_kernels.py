"""The three simulated kernels: lock rules, half-online blocks, chunking, the first block of an empty zone."""

from __future__ import annotations

import errno

import anyio
import pytest

from hotplugd import Action, Outcome, State, ZoneRequest
from hotplugd_simulated.host import Host
from hotplugd_simulated.kernels import HZ, TRYLOCK_RETRY, chunks, kernel_percent, kernel_workers
from hotplugd_simulated.scenario import Scenario
from hotplugd_simulated.settings import Settings, Step

GiB = 1 << 30


def host(**kw) -> Host:
    base = {"nodes": 1, "cpus_per_node": 4, "boot_memory": GiB, "scenario": (), "cost_fixed": 1e-3,
            "cost_init_per_page": 0.0, "cost_free_per_page": 0.0, "cost_setup": 0.0}
    return Host(Settings(**{**base, **kw}))


async def writers(h: Host, count: int, threads: int) -> list:
    """``count`` new blocks onlined from ``threads`` concurrent writers (block i to writer i mod N)."""
    indices = [h.plug(0).index for _ in range(count)]
    results: dict[int, object] = {}

    async def lane(mine: list[int]) -> None:
        for i in mine:
            results[i] = await h.online(i, ZoneRequest.AUTO)

    async with anyio.create_task_group() as tg:
        for t in range(threads):
            tg.start_soon(lane, indices[t::threads])
    return [results[i] for i in indices]


def test_the_trylock_retry_is_msleep_5_rounded_to_the_tick():
    assert HZ == 250 and 0.008 <= TRYLOCK_RETRY <= 0.012


@pytest.mark.parametrize("kernel", ["mainline", "per-block", "anolis"])
def test_every_kernel_takes_the_global_lock_by_trylock(kernel):
    h = host(kernel=kernel, kernel_ratio=0)
    results = anyio.run(writers, h, 8, 4)
    assert all(r.outcome is Outcome.ONLINED for r in results)
    assert h.max_inflight == 1  # four writers, one online at a time
    assert h.lock_retries > 0  # the losers slept and restarted


def test_the_idealised_no_lock_kernel_onlines_at_once():
    h = host(lock="none")
    anyio.run(writers, h, 8, 4)
    assert h.max_inflight == 4 and h.lock_retries == 0


def test_misuse_gets_the_kernels_errnos():
    h = host()

    async def main() -> tuple:
        [first] = await writers(h, 1, 1)
        again = await h.online(h.next_index - 1, ZoneRequest.AUTO)
        removed = h.plug(0).index
        h.unplug(removed)
        gone = await h.online(removed, ZoneRequest.AUTO)
        index = h.plug(0).index
        both: list = []
        async with anyio.create_task_group() as tg:
            for _ in range(2):
                tg.start_soon(_append, both, h.online(index, ZoneRequest.AUTO))
        return first, again, gone, both

    first, again, gone, both = anyio.run(main)
    assert first.outcome is Outcome.ONLINED
    assert (again.outcome, again.errno) == (Outcome.ALREADY_ONLINE, errno.EINVAL)
    assert (gone.outcome, gone.errno) == (Outcome.GONE, errno.ENOENT)
    assert sorted(r.outcome for r in both) == [Outcome.ALREADY_ONLINE, Outcome.ONLINED]
    assert [r.errno for r in both if r.outcome is Outcome.ALREADY_ONLINE] == [errno.EINVAL]


async def _append(out: list, call) -> None:
    out.append(await call)


def test_per_block_pays_setup_per_block_so_it_loses_small_and_wins_large():
    s = Settings(cpus_per_node=16)
    small, large = s.costs(128 << 20), s.costs(GiB)
    assert small.per_block(16) > small.serial
    assert large.serial / large.per_block(16) == pytest.approx(3.0, rel=0.05)
    assert large.per_block(1) == large.serial


def test_anolis_leaves_a_user_space_write_half_online():
    h = host(kernel="anolis", kernel_ratio=100)  # auto-online off: no final phase will run

    async def main() -> tuple:
        index = h.plug(0).index
        written = await h.online(index, ZoneRequest.AUTO)
        again = await h.online(index, ZoneRequest.AUTO)
        await h.deferred_online_memory(0, [index])  # skipped while auto-online is off
        return index, written, again

    index, written, again = anyio.run(main)
    block = h.blocks[index]
    assert written.outcome is Outcome.KERNEL_DEFERRED and written.errno is None
    assert (again.outcome, again.errno) == (Outcome.KERNEL_DEFERRED, errno.EINVAL)
    assert (block.online_attr, block.sysfs_state) == (1, "offline")
    assert block.view(h.s.block_size).state is State.KERNEL_DEFERRED
    assert h.offline_bytes() == h.s.block_size  # still counted offline (virtio-mem's threshold sees it)


def test_anolis_final_phase_onlines_the_request_without_a_uevent():
    s = Settings(kernel="anolis", kernel_ratio=100, auto_online=True, nodes=1, cpus_per_node=4, add_interval=0,
                 cost_fixed=1e-4,
                 cost_init_per_page=0.0, cost_free_per_page=0.0, cost_setup=0.0,
                 scenario=(Step("virtio-mem", size=2 * GiB),))
    h = Host(s)
    scenario = Scenario(s, h)

    async def main() -> list:
        return [e async for e in scenario.events()]

    events = anyio.run(main)
    added = [b for b in h.blocks.values() if b.index >= 32]  # boot memory: 4 GiB = 32 blocks
    assert len(added) == 16 and all(b.state is State.ONLINE for b in added)
    assert {e.action for e in events} == {Action.ADD}  # the end of the phase raises nothing
    # the kernel PREPAREd each block before its uevent: none reached user space offline
    assert all(e.block.state is State.KERNEL_DEFERRED for e in events)


def test_chunks_are_aligned_and_the_last_takes_the_rest():
    assert chunks(10, 4) == [2, 2, 2, 4]
    assert chunks(3, 16) == [1, 1, 1]
    assert chunks(16, 1) == [16]
    assert chunks(0, 4) == []
    assert kernel_workers(16, 50) == 8 and kernel_workers(16, 0) == 1 and kernel_workers(3, 10) == 1
    assert kernel_workers(16, 400) == 16 and kernel_percent(0.25) == 25 and kernel_percent(3) == 100


def test_the_final_phase_runs_one_worker_per_chunk():
    h = host(kernel="anolis", kernel_ratio=100, auto_online=True, cost_fixed=2e-3)
    order: list[int] = []
    set_online = h._set_online

    def record(block):
        order.append(block.index)
        set_online(block)

    h._set_online = record

    async def main() -> list[int]:
        blocks = [h.plug(0) for _ in range(8)]
        for b in blocks:
            await h.kernel_online(b)
        assert all(b.state is State.KERNEL_DEFERRED for b in blocks)
        await h.deferred_online_memory(0, [b.index for b in blocks])
        return [b.index for b in blocks]

    indices = anyio.run(main)
    # 4 workers, chunks of 2: the first block of every chunk goes online before any second one
    assert sorted(order[:4]) == indices[0::2] and sorted(order[4:]) == indices[1::2]
    assert h.max_inflight == 4


def test_the_first_block_of_an_empty_zone_is_onlined_normally():
    h = host(kernel="anolis", kernel_ratio=100, boot_memory=0)

    async def main() -> list:
        blocks = [h.plug(0).index for _ in range(4)]
        return [await h.online(blocks[0], ZoneRequest.AUTO), await h.online(blocks[1], ZoneRequest.AUTO),
                await h.online(blocks[2], ZoneRequest.MOVABLE), await h.online(blocks[3], ZoneRequest.MOVABLE)]

    normal, normal2, movable, movable2 = anyio.run(main)
    assert normal.outcome is Outcome.ONLINED and normal2.outcome is Outcome.KERNEL_DEFERRED
    assert movable.outcome is Outcome.ONLINED and movable2.outcome is Outcome.KERNEL_DEFERRED


def test_anolis_with_the_ratio_at_zero_onlines_the_normal_way():
    h = host(kernel="anolis", kernel_ratio=0)
    [result] = anyio.run(writers, h, 1, 1)
    assert result.outcome is Outcome.ONLINED
