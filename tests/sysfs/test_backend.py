"""The SysfsBackend on a fake tree: start-up checks, events, scan, census, config."""

from __future__ import annotations

import errno

import anyio
import pytest

from hotplugd import Action, BackendError, Block, BlockEvent, Outcome, Rescan, State, ZoneRequest
from hotplugd_sysfs import SysfsBackend

pytestmark = pytest.mark.asyncio
BLOCK = 128 << 20


@pytest.fixture
def backend(fake_sysfs):
    return SysfsBackend.from_options(fake_sysfs.options(), io=fake_sysfs.io)


async def collect(backend: SysfsBackend, count: int) -> list[BlockEvent | Rescan]:
    events: list[BlockEvent | Rescan] = []
    with anyio.fail_after(5):
        async for event in backend.events():
            events.append(event)
            if len(events) == count:
                break
    return events


# -- start ---------------------------------------------------------------------------


async def test_start_refuses_without_write_access(fake_sysfs, backend):
    fake_sysfs.add_block(3)
    fake_sysfs.writable = False
    with pytest.raises(BackendError, match=r"must run as root or with write access to .*/memory3/state"):
        await backend.start()


async def test_start_checks_the_memory_directory_when_no_block_exists(fake_sysfs, backend):
    fake_sysfs.writable = False
    with pytest.raises(BackendError, match=r"write access to \S*/devices/system/memory\n"):
        await backend.start()


async def test_start_names_a_wrong_root(tmp_path):
    backend = SysfsBackend.from_options({"root": str(tmp_path / "nowhere"), "netlink": False})
    with pytest.raises(BackendError, match="does not exist") as info:
        await backend.start()
    assert "plugins.sysfs.root" in str(info.value)


async def test_start_binds_netlink_when_enabled(fake_sysfs):
    backend = SysfsBackend.from_options(fake_sysfs.options(netlink=True, rcvbuf="1MiB"), io=fake_sysfs.io)
    await backend.start()
    try:
        assert backend.rcvbuf >= 1 << 20
        assert "netlink" in backend.describe()
        with pytest.raises(BackendError, match="netlink = false"):
            backend.feed(b"")
    finally:
        await backend.stop()


# -- scan ----------------------------------------------------------------------------


async def test_scan_and_topology(fake_sysfs, backend):
    fake_sysfs.add_node(1, "4-7")
    fake_sysfs.add_blocks(range(0, 2), state="online", zones=("Normal",))
    fake_sysfs.add_blocks(range(2, 4), node=1)
    scan = await backend.scan()
    assert [(b.index, b.node, b.state) for b in scan.blocks] == [
        (0, 0, State.ONLINE), (1, 0, State.ONLINE), (2, 1, State.OFFLINE), (3, 1, State.OFFLINE)]
    assert scan.topology.cpus_per_node == {0: 4, 1: 4}
    assert scan.topology.block_size == BLOCK
    assert list(backend.census()) == scan.blocks
    assert (await backend.topology()).mem_available == 16 << 30


# -- events --------------------------------------------------------------------------


def record_reads(fake_sysfs, monkeypatch) -> list[str]:
    """The names of the files the backend reads from now on (``state``, ``valid_zones``, ...)."""
    names: list[str] = []
    real = fake_sysfs.io.read

    def read(path):
        names.append(path.name)
        return real(path)

    monkeypatch.setattr(fake_sysfs.io, "read", read)
    return names


async def test_a_fresh_add_is_queued_from_its_node_link_alone(fake_sysfs, backend, monkeypatch):
    await backend.start()
    fake_sysfs.add_node(1, "4-7")
    reads = record_reads(fake_sysfs, monkeypatch)
    for data in fake_sysfs.hot_add([70, 71], node=1):
        backend.feed(data)
    events = await collect(backend, 2)
    # offline (a fresh add), zones unknown: neither state nor valid_zones is read on the event path
    assert events == [BlockEvent(Action.ADD, i, Block(i, BLOCK, 1, State.OFFLINE, ())) for i in (70, 71)]
    assert "state" not in reads and "valid_zones" not in reads


async def test_a_synthetic_add_is_read_in_full(fake_sysfs, backend):
    await backend.start()
    fake_sysfs.add_block(5, node=0, zones=("Movable", "Normal"))
    backend.feed(fake_sysfs.uevent("add", 5, synthetic=True))
    [event] = await collect(backend, 1)
    assert event.block == Block(5, BLOCK, 0, State.OFFLINE, ("Movable", "Normal"))


async def test_a_fresh_add_is_yielded_before_the_rest_of_its_batch_is_parsed(fake_sysfs, backend, monkeypatch):
    await backend.start()
    fake_sysfs.add_blocks(range(8))
    for i in range(8):
        backend.feed(fake_sysfs.uevent("add", i))
    decoded = []
    real = backend.intake.decode
    monkeypatch.setattr(backend.intake, "decode", lambda d: decoded.append(d) or real(d))
    async for event in backend.events():
        assert event.index == 0 and len(decoded) == 1
        break


async def test_a_batchs_replays_are_read_in_one_go_and_events_keep_their_order(fake_sysfs, backend, monkeypatch):
    await backend.start()
    fake_sysfs.add_blocks(range(4))
    fake_sysfs.set_state(2, "online", ("Normal",))
    reads = []
    real = backend.sysfs.read_blocks
    monkeypatch.setattr(backend.sysfs, "read_blocks", lambda indices: reads.append(list(indices)) or real(indices))
    for index, synthetic in ((0, False), (1, True), (2, True), (3, False)):
        backend.feed(fake_sysfs.uevent("add", index, synthetic=synthetic))
    events = await collect(backend, 4)
    assert [(e.index, e.synthetic, e.block.state) for e in events] == [
        (0, False, State.OFFLINE), (1, True, State.OFFLINE), (2, True, State.ONLINE), (3, False, State.OFFLINE)]
    assert reads == [[1, 2]]


def register_at_look(fake_sysfs, index: int, nth: int, node: int = 0) -> list:
    """Link block ``index`` to ``node`` at the ``nth`` look at its directory; the looks so far."""
    looks = []

    def look(path):
        if path.name == f"memory{index}":
            looks.append(path)
            if len(looks) == nth:
                fake_sysfs.register(index, node=node)

    fake_sysfs.before_listdir.append(look)
    return looks


async def test_events_after_an_unlinked_add_wait_for_it_in_order(fake_sysfs, backend):
    await backend.start()
    fake_sysfs.add_block(7, registered=False)
    fake_sysfs.add_block(8)
    looks = register_at_look(fake_sysfs, 7, 2)
    for data in (fake_sysfs.uevent("add", 7), fake_sysfs.uevent("remove", 7), fake_sysfs.uevent("add", 8)):
        backend.feed(data)
    events = await collect(backend, 3)
    assert [(e.action, e.index) for e in events] == [(Action.ADD, 7), (Action.REMOVE, 7), (Action.ADD, 8)]
    assert len(looks) == 2  # block 8's add waited for 7's second look


async def test_the_real_capture_stream_becomes_block_events(fake_sysfs, backend, captures):
    await backend.start()
    fake_sysfs.add_blocks(range(64, 72))  # present while their events are read
    fake_sysfs.add_blocks(range(32, 40))
    for capture in captures:
        backend.feed(capture.data, capture.sender_pid)
    backend.end()
    events = [e async for e in backend.events()]
    assert [e.action for e in events][:8] == [Action.ADD] * 8
    assert sum(1 for e in events if e.action is Action.ONLINE) == 16
    assert sorted(e.index for e in events if e.action is Action.REMOVE) == list(range(32, 40))
    assert backend.dropped_counts() == {}


async def test_an_add_whose_block_is_already_gone_is_skipped(fake_sysfs, backend):
    await backend.start()
    backend.feed(fake_sysfs.uevent("add", 5))  # never present (added and removed again)
    fake_sysfs.add_block(6)
    backend.feed(fake_sysfs.uevent("add", 6))
    events = await collect(backend, 1)
    assert [e.index for e in events] == [6]


async def test_an_add_waits_until_the_kernel_links_the_block_to_its_node(fake_sysfs, backend):
    await backend.start()
    fake_sysfs.add_block(7, node=1, registered=False)  # the uevent comes before the node link
    looks = register_at_look(fake_sysfs, 7, 3, node=1)
    backend.feed(fake_sysfs.uevent("add", 7))
    [event] = await collect(backend, 1)
    assert event.block.node == 1 and len(looks) == 3


async def test_a_linked_add_is_not_held_back_by_a_later_unlinked_one(fake_sysfs, backend):
    await backend.start()
    fake_sysfs.add_block(8)
    fake_sysfs.add_block(9, registered=False)
    looks = register_at_look(fake_sysfs, 9, 3)
    backend.feed(fake_sysfs.uevent("add", 8))
    backend.feed(fake_sysfs.uevent("add", 9))
    seen = []
    with anyio.fail_after(5):
        async for event in backend.events():
            seen.append((event.index, len(looks)))
            if len(seen) == 2:
                break
    assert seen[0][0] == 8 and seen[0][1] < 3  # yielded while memory9 was still unlinked
    assert seen[1] == (9, 3)


async def test_an_add_that_never_registers_asks_for_a_rescan(fake_sysfs, backend):
    await backend.start()
    backend.sysfs.register_wait = 0.01
    fake_sysfs.add_block(7, registered=False)
    backend.feed(fake_sysfs.uevent("add", 7))
    [event] = await collect(backend, 1)
    assert event == Rescan("not_registered")


async def test_synthetic_add_of_an_online_block_reports_it_online(fake_sysfs, backend):
    await backend.start()
    fake_sysfs.add_block(4, state="online", zones=("Movable",))
    backend.feed(fake_sysfs.uevent("add", 4, synthetic=True))
    [event] = await collect(backend, 1)
    assert event.synthetic and event.block.state is State.ONLINE  # the core ignores it


async def test_synthetic_remove_and_online_change_nothing(fake_sysfs, backend):
    await backend.start()
    fake_sysfs.add_block(4)
    backend.feed(fake_sysfs.uevent("remove", 4, synthetic=True))
    backend.feed(fake_sysfs.uevent("online", 4, synthetic=True))
    backend.feed(fake_sysfs.uevent("remove", 9))
    [event] = await collect(backend, 1)
    assert event == BlockEvent(Action.REMOVE, 9)


async def test_overflow_yields_a_rescan_after_the_batch(fake_sysfs, backend):
    await backend.start()
    fake_sysfs.add_block(1)
    backend.feed(fake_sysfs.uevent("add", 1))
    backend.overflow()
    events = await collect(backend, 2)
    assert [type(e) for e in events] == [BlockEvent, Rescan]
    assert events[1] == Rescan("overflow")


async def test_forged_malformed_and_oversized_are_counted(fake_sysfs, backend):
    await backend.start()
    fake_sysfs.add_block(1)
    backend.feed(fake_sysfs.uevent("add", 1), sender=31337)
    backend.feed(b"add@/devices/system/memory/memory1\0NOEQUALS\0")
    backend.feed(fake_sysfs.uevent("add", 1), truncated=True)
    backend.feed(b"change@/devices/virtual/net/lo\0ACTION=change\0")
    backend.feed(fake_sysfs.uevent("add", 1))
    [event] = await collect(backend, 1)
    assert event.index == 1
    assert backend.dropped_counts() == {"not_kernel": 1, "malformed": 1, "oversized": 1}


async def test_the_stream_ends_on_end(fake_sysfs, backend):
    await backend.start()
    backend.end()
    assert [e async for e in backend.events()] == []


# -- online --------------------------------------------------------------------------


async def test_online_runs_in_a_thread_and_rereads(fake_sysfs, backend):
    fake_sysfs.add_block(3)
    block = (await backend.scan()).blocks[0]
    result = await backend.online(block, ZoneRequest.MOVABLE)
    assert (result.outcome, result.zone) == (Outcome.ONLINED, "Movable")
    fake_sysfs.fail(3, errno.EBUSY)
    assert (await backend.online(block, ZoneRequest.MOVABLE)).outcome is Outcome.TRANSIENT


async def test_conflicts_from_the_backend(fake_sysfs, backend):
    assert await backend.conflicts() == []
    fake_sysfs.set_auto_online("online")
    fake_sysfs.add_udev_rule("99-mem.rules", 'SUBSYSTEM=="memory", ATTR{state}="online"\n', where="run")
    [message] = await backend.conflicts()  # the kernel's auto-online is the plan's to judge
    assert "99-mem.rules:1" in message
    assert (await backend.topology()).kernel_onlines
