"""Where the kernel onlines, the sysfs intake paces the kernel's events: after a batch with the kernel's own
memory events it leaves the socket alone for ``KERNEL_PACE``, and what came meanwhile is read as one batch.

The pause is the backend's ``_pause`` (``anyio.sleep(self.pace)``); these tests hold it on an event of their
own, so that nothing depends on how fast the machine is.
"""

from __future__ import annotations

import anyio
import pytest

from hotplugd import Action
from hotplugd_sysfs import SysfsBackend
from hotplugd_sysfs.backend import KERNEL_PACE

pytestmark = pytest.mark.asyncio


class HeldPause:
    """Stands in for the backend's pause: counts the pauses and holds each until ``release``."""

    def __init__(self) -> None:
        self.count = 0
        self.entered = anyio.Event()
        self._go = anyio.Event()

    async def __call__(self) -> None:
        self.count += 1
        self.entered.set()
        await self._go.wait()

    def release(self) -> None:
        self._go.set()


def watch_batches(backend: SysfsBackend) -> list[int]:
    """The size of each batch the backend receives from its source."""
    sizes: list[int] = []
    source = backend._source
    real = source.receive

    async def receive():
        batch = await real()
        if batch is not None:
            sizes.append(len(batch.datagrams))
        return batch

    source.receive = receive
    return sizes


async def started(fake_sysfs, auto_online: str) -> tuple[SysfsBackend, HeldPause, list[int]]:
    fake_sysfs.set_auto_online(auto_online)
    fake_sysfs.add_blocks(range(8))
    backend = SysfsBackend.from_options(fake_sysfs.options(), io=fake_sysfs.io)
    await backend.start()
    pause = HeldPause()
    backend._pause = pause
    return backend, pause, watch_batches(backend)


async def test_where_the_kernel_onlines_what_comes_during_the_pause_is_read_as_one_batch(fake_sysfs):
    backend, pause, sizes = await started(fake_sysfs, "online")
    assert backend.kernel_onlines and backend.pace == KERNEL_PACE > 0
    events = backend.events()
    backend.feed(fake_sysfs.kernel_online(0, "online"))
    first = await events.__anext__()
    assert (first.action, first.index) == (Action.ONLINE, 0)
    async with anyio.create_task_group() as tg:
        rest: list = []

        async def read() -> None:
            for _ in range(5):
                rest.append(await events.__anext__())

        tg.start_soon(read)
        with anyio.fail_after(10):
            await pause.entered.wait()  # the intake rests before it reads the socket again
        for index in range(1, 6):  # the kernel's walk goes on meanwhile
            backend.feed(fake_sysfs.kernel_online(index, "online"))
            await anyio.lowlevel.checkpoint()
        assert rest == []
        pause.release()
    assert [(e.action, e.index) for e in rest] == [(Action.ONLINE, i) for i in range(1, 6)]
    assert sizes == [1, 5]
    assert pause.count == 1
    await events.aclose()


async def test_where_hotplugd_onlines_every_event_is_read_at_once(fake_sysfs):
    backend, pause, sizes = await started(fake_sysfs, "offline")
    assert not backend.kernel_onlines
    events = backend.events()
    with anyio.fail_after(10):
        for index in range(4):
            backend.feed(fake_sysfs.uevent("add", index))
            event = await events.__anext__()
            assert (event.action, event.index) == (Action.ADD, index)
    assert sizes == [1, 1, 1, 1]
    assert pause.count == 0
    await events.aclose()


async def test_replays_alone_are_not_paced(fake_sysfs):
    backend, pause, sizes = await started(fake_sysfs, "online")
    events = backend.events()
    with anyio.fail_after(10):
        for index in range(3):
            backend.feed(fake_sysfs.uevent("add", index, synthetic=True))
            assert (await events.__anext__()).index == index
    assert sizes == [1, 1, 1] and pause.count == 0
    await events.aclose()


async def test_the_pace_follows_the_kernels_knob(fake_sysfs):
    backend = SysfsBackend.from_options(fake_sysfs.options(), io=fake_sysfs.io)
    await backend.start()
    assert not backend.kernel_onlines  # the fake kernel boots with auto-online off
    await backend.set_kernel_knobs({"auto_online_blocks": "online"})
    assert backend.kernel_onlines
    fake_sysfs.set_auto_online("offline")  # someone else turned it off: the next topology read says so
    assert not (await backend.topology()).kernel_onlines
    assert not backend.kernel_onlines
    fake_sysfs.set_auto_online("online_movable")
    await backend.scan()
    assert backend.kernel_onlines
